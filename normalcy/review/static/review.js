// normalcy review: label images (table rows, or a series run's events) in rank order; the server re-ranks
// after each label. Plain JavaScript, no dependencies. The API is described in normalcy/server.py.
// A table row has no picture: its card and detail view show its feature values instead. An event's picture
// is the window around it (drawn by predict; past the ones it draws, a picture saying so); its card also names
// the metrics that drove it.
"use strict";

(function () {
  const PAGE = 200; // items fetched per request

  const state = {
    items: [],          // items shown, in rank order
    total: 0,           // items matching the filters
    nItems: 0,
    nLabelled: 0,
    strategy: "none",
    kind: "images",     // "images", "table" for a table run's rows, "series" for a series run's events
    idColumn: "path",   // what a table run's rows are called by
    rerankMs: null,
    selectedId: null,
    overlay: false,
    label: "all",       // label filter
    decision: "all",    // decision filter
    loadSeq: 0,         // drops answers to superseded list requests
    authFailed: false,
    moreQueued: false,  // a "load more" is waiting in the queue
    runVersion: null,   // the run the items shown are of: sent with each label (another predict may replace it)
  };

  const $ = (id) => document.getElementById(id);
  let els = {};
  const cards = new Map(); // item id -> card element, reused so images are not reloaded

  // ---------------------------------------------------------------- HTTP

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, url, body) {
    const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (state.runVersion) opts.headers["X-Run-Version"] = state.runVersion;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, opts);
    } catch (err) {
      throw new Error("the server did not answer (" + err.message + ")");
    }
    if (res.status === 401) {
      showAuthError();
      throw new HttpError(401, "not authorised");
    }
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try {
        const data = await res.json();
        if (data && data.detail) {
          msg += ": " + (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
        }
      } catch (_) { /* not JSON */ }
      throw new HttpError(res.status, msg);
    }
    const type = res.headers.get("content-type") || "";
    return type.includes("json") ? res.json() : null;
  }

  // Actions run one after another, so a fast reviewer's key presses apply in order,
  // each to the item selected when its turn comes.
  let queue = Promise.resolve();
  let pending = 0;
  function enqueue(task) {
    pending += 1;
    document.body.classList.add("busy");
    queue = queue.then(task).catch(showError).finally(() => {
      pending -= 1;
      if (pending === 0) document.body.classList.remove("busy");
    });
    return queue;
  }

  function showError(err) {
    if (err instanceof HttpError && err.status === 401) return; // the page shows the auth message
    toast("Error: " + (err && err.message ? err.message : String(err)), true);
  }

  function showAuthError() {
    state.authFailed = true;
    document.body.classList.add("unauthorised");
    els.authError.hidden = false;
    if (els.detail.open) els.detail.close();
  }

  // ---------------------------------------------------------------- formatting

  function fmt3(x) {
    return typeof x === "number" && Number.isFinite(x) ? x.toPrecision(3) : "–";
  }

  // A feature value: whole numbers as they are, others to 4 significant digits.
  function fmtValue(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "–";
    return Number.isInteger(x) && Math.abs(x) < 1e9 ? String(x) : x.toPrecision(4);
  }

  function fmtDeviation(d) {
    if (typeof d !== "number" || !Number.isFinite(d)) return "–";
    return (d >= 0 ? "+" : "−") + Math.abs(d).toFixed(1) + "σ";
  }

  // A table of a row's features (furthest from the run's median first); text only, never HTML.
  function featureTable(features, max, head) {
    const table = document.createElement("table");
    table.className = "feats";
    if (head) {
      const tr = table.createTHead().insertRow();
      for (const text of ["column", "value", "from median"]) {
        const th = document.createElement("th");
        th.textContent = text;
        tr.appendChild(th);
      }
    }
    const body = table.createTBody();
    for (const f of (features || []).slice(0, max)) {
      const tr = body.insertRow();
      tr.insertCell().textContent = f.column;
      tr.insertCell().textContent = fmtValue(f.value);
      const dev = tr.insertCell();
      dev.textContent = fmtDeviation(f.deviation);
      dev.className = Math.abs(f.deviation || 0) >= 3 ? "far" : "";
    }
    return table;
  }

  // Bidirectional controls in a file name, id, series or column name (U+202E RIGHT-TO-LEFT OVERRIDE, ...) reorder
  // the text after them as shown: "x\u202Egnp.exe" read "xexe.png". They are shown as their code, never applied.
  const BIDI = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;
  function visible(text) {
    if (typeof text !== "string") return text;
    return text.replace(BIDI, (c) => "<U+" + c.codePointAt(0).toString(16).toUpperCase() + ">");
  }

  // An item's texts from the run as they are to be shown (see visible).
  function forDisplay(item) {
    item.name = visible(item.name);
    item.path = visible(item.path);
    if (item.event) {
      item.event.series = visible(item.event.series);
      if (Array.isArray(item.event.metrics)) item.event.metrics = item.event.metrics.map(visible);
    }
    if (Array.isArray(item.features)) for (const f of item.features) f.column = visible(f.column);
    return item;
  }

  // An event in one line: its metrics (the largest contributions first) and its length.
  function eventLine(ev) {
    const what = ev.metrics && ev.metrics.length ? ev.metrics.join(", ") : "–";
    return what + " · " + ev.rows + " row" + (ev.rows === 1 ? "" : "s");
  }

  function fmtMs(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
    return ms < 10 ? ms.toFixed(1) : String(Math.round(ms));
  }

  function imageSrc(item, overlay) {
    return overlay && item.overlay_url ? item.overlay_url : item.image_url;
  }

  function labelText(item) {
    return item.label ? item.label : "unlabelled";
  }

  // ---------------------------------------------------------------- loading

  function listUrl(offset, limit) {
    const q = new URLSearchParams({
      label: state.label, decision: state.decision, offset: String(offset), limit: String(limit),
    });
    return "/api/items?" + q.toString();
  }

  function applyMeta(data) {
    state.total = data.total;
    state.nItems = data.n_items;
    state.nLabelled = data.n_labelled;
    state.strategy = data.strategy;
    if (data.strategies && !els.strategy.options.length) {
      // The server's ranking registry names the strategies; the page does not restate them.
      for (const name of data.strategies) els.strategy.add(new Option(name, name));
      els.strategy.value = state.strategy;
    }
    if (data.labels && !els.filterLabel.options.length) {
      // The labels as the server names them, after the three filters that are not labels.
      for (const name of ["all", "unlabelled", "labelled", ...data.labels]) els.filterLabel.add(new Option(name, name));
      els.filterLabel.value = state.label;
    }
    if (data.kind) setKind(data.kind, data.id_column);
    if (data.rerank_ms !== undefined && data.rerank_ms !== null) state.rerankMs = data.rerank_ms;
    if (data.run_version) state.runVersion = data.run_version;
  }

  // Re-fetch everything shown so far (at least one page) in the current order.
  // pick(oldItems, newItems) chooses the selected id; by default the selection stays put.
  async function reload(pick, reset) {
    const seq = ++state.loadSeq;
    const shown = reset ? 0 : state.items.length;
    const limit = Math.max(PAGE, Math.ceil(shown / PAGE) * PAGE);
    els.gallery.setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", listUrl(0, limit));
      if (seq !== state.loadSeq) return false;
      const old = state.items;
      applyMeta(data);
      state.items = data.items.map(forDisplay);
      state.selectedId = (pick || keepSelection)(old, state.items);
      render();
      return true;
    } finally {
      if (seq === state.loadSeq) els.gallery.removeAttribute("aria-busy");
    }
  }

  async function loadMore() {
    if (state.items.length >= state.total) return; // an earlier request already got them
    const seq = state.loadSeq;
    const data = await api("GET", listUrl(state.items.length, PAGE));
    if (seq !== state.loadSeq) return;
    if (data.run_version && state.runVersion && data.run_version !== state.runVersion) {
      await reload(null, true); // another run in the folder: its items from the top, not appended to the old
      return;
    }
    applyMeta(data);
    const seen = new Set(state.items.map((it) => it.id));
    state.items = state.items.concat(data.items.filter((it) => !seen.has(it.id)).map(forDisplay));
    render(false);
  }

  function indexOf(items, id) {
    return items.findIndex((it) => it.id === id);
  }

  // Same item if still listed, else the one now at its old place, else the first.
  function keepSelection(old, items) {
    if (!items.length) return null;
    if (indexOf(items, state.selectedId) >= 0) return state.selectedId;
    const i = indexOf(old, state.selectedId);
    return items[Math.min(Math.max(i, 0), items.length - 1)].id;
  }

  // After a label: the first unlabelled item at or after the labelled item's old place,
  // so a reviewer working top-down carries on where they were.
  function nextUnlabelled(labelledId, oldIndex) {
    return function (old, items) {
      if (!items.length) return null;
      const start = Math.max(oldIndex, 0);
      for (let i = start; i < items.length; i++) {
        if (items[i].label === null && items[i].id !== labelledId) return items[i].id;
      }
      for (let i = 0; i < Math.min(start, items.length); i++) {
        if (items[i].label === null && items[i].id !== labelledId) return items[i].id;
      }
      if (indexOf(items, labelledId) >= 0) return labelledId;
      return items[Math.min(start, items.length - 1)].id;
    };
  }

  // ---------------------------------------------------------------- labelling

  function selectedItem() {
    const i = indexOf(state.items, state.selectedId);
    return i >= 0 ? state.items[i] : null;
  }

  // kind: "label" (value "normal" | "anomalous"), "interest" (value 0..5) or "clear".
  function labelSelected(kind, value) {
    enqueue(async () => {
      const item = selectedItem();
      if (!item) return;
      // Only the field changed is sent: the server keeps the other as stored, so a label given here and an
      // interest given on another page at once (this page's copy of the item is older) keep each other.
      let body;
      if (kind === "label") {
        body = { label: value };
      } else if (kind === "interest") {
        body = item.label ? { interest: value } : { label: value === 0 ? "normal" : "anomalous", interest: value };
      } else {
        body = { label: null, interest: null };
      }
      const oldIndex = indexOf(state.items, item.id);
      let res;
      try {
        res = await api("POST", "/api/items/" + encodeURIComponent(item.id) + "/label", body);
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 401)) err.message = "could not label " + item.name + ": " + err.message;
        // 409: the run folder holds another run since the list was loaded; show that run's items
        if (err instanceof HttpError && err.status === 409) await reload(null, true).catch(() => {});
        throw err;
      }
      const updated = res.item ? forDisplay(res.item) : item;
      if (typeof res.rerank_ms === "number") state.rerankMs = res.rerank_ms;
      // Show the new label at once, even if the re-fetch below fails.
      const i = indexOf(state.items, item.id);
      if (i >= 0) state.items[i] = updated;

      let what;
      if (kind === "clear") {
        what = "cleared the label of " + updated.name;
      } else {
        what = "labelled " + updated.name + " " + labelText(updated);
        if (updated.interest !== null && updated.interest !== undefined) what += ", interest " + updated.interest;
      }
      what += " · re-ranked in " + fmtMs(res.rerank_ms) + " ms";
      try {
        await reload(kind === "clear" ? null : nextUnlabelled(item.id, oldIndex));
      } catch (err) {
        render();
        if (err instanceof HttpError && err.status === 401) return;
        toast(what + " · the list could not be refreshed: " + err.message, true);
        return;
      }
      toast(what);
    });
  }

  // ---------------------------------------------------------------- rendering

  function cardFor(item) {
    let el = cards.get(item.id);
    if (!el) {
      el = document.createElement("div");
      el.className = "card";
      el.id = "card-" + item.id;
      el.setAttribute("role", "option");
      el.dataset.id = String(item.id);
      el.innerHTML =
        (item.image_url
          ? '<div class="thumb"><img loading="lazy" decoding="async" alt=""><span class="rank"></span></div>'
          : '<div class="thumb values"><span class="rank"></span></div>') +
        '<div class="cap">' +
        '<div class="name"></div>' +
        '<div class="metrics" hidden></div>' +
        '<div class="row"><span class="score"></span><span class="badge decision"></span></div>' +
        '<div class="row"><span class="badge label-badge"></span><span class="interest"></span></div>' +
        "</div>";
      const id = item.id;
      el.addEventListener("click", () => {
        select(id);
        openDetail();
      });
      cards.set(item.id, el);
    }
    fillCard(el, item);
    return el;
  }

  function fillCard(el, item) {
    el.dataset.rank = String(item.rank);
    el.classList.toggle("is-normal", item.label === "normal");
    el.classList.toggle("is-anomalous", item.label === "anomalous");
    const img = el.querySelector("img");
    if (img) {
      const src = imageSrc(item, state.overlay);
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
      img.alt = item.name + (state.overlay && item.overlay_url ? " with anomaly map" : "");
    } else {
      const thumb = el.querySelector(".thumb");
      const old = thumb.querySelector("table");
      const table = featureTable(item.features, 4, false);
      if (old) old.replaceWith(table);
      else thumb.appendChild(table);
    }
    el.querySelector(".rank").textContent = "#" + item.rank;
    const metrics = el.querySelector(".metrics");
    metrics.hidden = !item.event;
    if (item.event) {
      metrics.textContent = eventLine(item.event);
      metrics.title = "the metrics that drove the event, and its length in rows";
    }
    const name = el.querySelector(".name");
    name.textContent = item.name;
    name.title = item.path;
    el.querySelector(".score").textContent = fmt3(item.score);
    el.querySelector(".score").title = "anomaly score";
    const dec = el.querySelector(".decision");
    dec.textContent = item.decision;
    dec.className = "badge decision dec-" + item.decision;
    dec.title = "detector decision";
    const lab = el.querySelector(".label-badge");
    lab.hidden = !item.label;
    lab.textContent = item.label ? "✓ " + item.label : "";
    lab.className = "badge label-badge" + (item.label ? " lab-" + item.label : "");
    lab.title = item.label ? "your label: " + item.label : "";
    const interest = el.querySelector(".interest");
    const hasInterest = item.interest !== null && item.interest !== undefined;
    interest.textContent = hasInterest ? "★ " + item.interest : "";
    interest.title = hasInterest ? "interest " + item.interest + " of 5" : "";
    interest.hidden = !hasInterest;
    el.setAttribute("aria-label",
      "rank " + item.rank + ", " + item.name + ", score " + fmt3(item.score) + ", " + item.decision +
      ", " + labelText(item) + (hasInterest ? ", interest " + item.interest : ""));
  }

  function render(scroll) {
    const nodes = state.items.map(cardFor);
    els.gallery.replaceChildren(...nodes);
    const ids = new Set(state.items.map((it) => it.id));
    for (const id of Array.from(cards.keys())) if (!ids.has(id)) cards.delete(id);

    els.counts.textContent = state.nLabelled + " / " + state.nItems + " labelled";
    els.rerank.textContent = state.rerankMs === null ? "re-rank –" : "re-ranked in " + fmtMs(state.rerankMs) + " ms";
    if (els.strategy.value !== state.strategy) els.strategy.value = state.strategy;
    els.shown.textContent = "showing " + state.items.length + " of " + state.total;
    els.empty.hidden = state.items.length > 0;
    const rest = state.total - state.items.length;
    els.more.hidden = rest <= 0;
    els.more.textContent = "Show " + Math.min(rest, PAGE) + " more (" + rest + " not shown)";
    updateSelection(scroll !== false);
    if (els.detail.open) renderDetail();
  }

  function updateSelection(scroll) {
    for (const [id, el] of cards) {
      const on = id === state.selectedId;
      el.setAttribute("aria-selected", on ? "true" : "false");
      el.classList.toggle("selected", on);
    }
    const el = cards.get(state.selectedId);
    if (el) {
      els.gallery.setAttribute("aria-activedescendant", el.id);
      if (scroll) el.scrollIntoView({ block: "nearest" });
    } else {
      els.gallery.removeAttribute("aria-activedescendant");
    }
  }

  function select(id) {
    state.selectedId = id;
    updateSelection(true);
    if (els.detail.open) renderDetail();
    // Moving onto the last loaded item fetches the next page.
    if (indexOf(state.items, id) === state.items.length - 1 && state.total > state.items.length && !state.moreQueued) {
      state.moreQueued = true;
      enqueue(loadMore).finally(() => { state.moreQueued = false; });
    }
  }

  function move(delta) {
    if (!state.items.length) return;
    let i = indexOf(state.items, state.selectedId);
    if (i < 0) i = 0;
    else i = Math.min(Math.max(i + delta, 0), state.items.length - 1);
    select(state.items[i].id);
  }

  function columns() {
    const tracks = getComputedStyle(els.gallery).gridTemplateColumns;
    return tracks && tracks !== "none" ? tracks.split(" ").length : 1;
  }

  function setOverlay(on) {
    state.overlay = on;
    els.overlay.checked = on;
    els.detailOverlay.checked = on;
    try { localStorage.setItem("normalcy.overlay", on ? "1" : "0"); } catch (_) { /* private mode */ }
    for (const item of state.items) {
      const el = cards.get(item.id);
      if (el) fillCard(el, item);
    }
    if (els.detail.open) renderDetail();
  }

  // ---------------------------------------------------------------- detail view

  function openDetail() {
    if (!selectedItem()) return;
    renderDetail();
    if (!els.detail.open) els.detail.showModal();
    els.detail.focus();
  }

  function renderDetail() {
    const item = selectedItem();
    if (!item) {
      els.detail.close();
      return;
    }
    if (item.image_url) {
      const src = imageSrc(item, state.overlay);
      if (els.detailImg.getAttribute("src") !== src) els.detailImg.setAttribute("src", src);
      els.detailImg.alt = item.name + (state.overlay && item.overlay_url ? " with anomaly map" : "");
      els.detailNoOverlay.hidden = !(state.overlay && !item.overlay_url);
    } else {
      const rows = item.features || [];
      els.detailFeatures.replaceChildren(featureTable(rows, rows.length, true));
      if (!rows.length) els.detailFeatures.append("No feature values stored with this run.");
    }
    els.detailTitle.textContent = item.name;
    $("d-rank").textContent = item.rank + " of " + state.nItems;
    $("d-score").textContent = fmt3(item.score);
    $("d-decision").innerHTML = "";
    const dec = document.createElement("span");
    dec.className = "badge decision dec-" + item.decision;
    dec.textContent = item.decision;
    $("d-decision").appendChild(dec);
    $("d-priority").textContent = fmt3(item.priority);
    $("d-label").textContent = labelText(item);
    $("d-interest").textContent = item.interest === null || item.interest === undefined ? "–" : item.interest + " of 5";
    $("d-path").textContent = item.event ? item.event.series + ": " + item.event.start + " – " + item.event.end
      : item.path;
    if (item.event) {
      $("d-metrics").textContent = eventLine(item.event);
      $("d-peak").textContent = item.event.peak_time;
    }
    for (const b of els.detail.querySelectorAll("button[data-label]")) {
      const v = b.dataset.label;
      if (v !== "clear") b.setAttribute("aria-pressed", String(v === item.label));
    }
    for (const b of els.detail.querySelectorAll("button[data-interest]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.interest) === item.interest));
    }
    const i = indexOf(state.items, item.id);
    els.detailPrev.disabled = i <= 0;
    els.detailNext.disabled = i >= state.items.length - 1;
  }

  // ---------------------------------------------------------------- toast

  let toastTimer = null;
  function toast(message, isError) {
    els.toast.textContent = message;
    els.toast.classList.toggle("error", !!isError);
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { els.toast.hidden = true; }, isError ? 10000 : 4000);
  }

  // ---------------------------------------------------------------- keyboard

  function typingIn(target) {
    if (!(target instanceof Element)) return false;
    if (target.isContentEditable) return true;
    const tag = target.tagName;
    if (tag === "SELECT" || tag === "TEXTAREA") return true;
    if (tag === "INPUT") return !["checkbox", "radio", "button", "submit", "reset"].includes(target.type);
    return false;
  }

  function onKey(ev) {
    if (state.authFailed || ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    if (typingIn(ev.target)) return;
    const key = ev.key;
    // Enter and Space keep their usual meaning on buttons, links and check boxes.
    if ((key === "Enter" || key === " ") && ev.target instanceof Element &&
        ev.target.closest("button, a, input, summary")) return;
    if (els.help.open) {
      if (key === "?") { els.help.close(); ev.preventDefault(); }
      return; // Escape closes the help dialog natively
    }
    const inDetail = els.detail.open;
    const cols = inDetail ? 1 : columns();
    let handled = true;
    switch (key) {
      case "ArrowLeft": case "h": move(-1); break;
      case "ArrowRight": case "l": move(1); break;
      case "ArrowUp": case "k": move(-cols); break;
      case "ArrowDown": case "j": move(cols); break;
      case "Home": move(-Infinity); break;
      case "End": move(Infinity); break;
      case "Enter": if (!inDetail) openDetail(); break;
      case "Escape": if (inDetail) els.detail.close(); else handled = false; break;
      case "n": labelSelected("label", "normal"); break;
      case "a": labelSelected("label", "anomalous"); break;
      case "u": labelSelected("clear"); break;
      case "0": case "1": case "2": case "3": case "4": case "5":
        labelSelected("interest", Number(key)); break;
      case "o": if (state.kind === "images") setOverlay(!state.overlay); break;  // tables and events have no maps
      case "e": els.exportLink.click(); break;
      case "?": els.help.showModal(); break;
      default: handled = false;
    }
    if (handled) ev.preventDefault();
  }

  // ---------------------------------------------------------------- setup

  // A table run: no pictures, no overlays; rows are named by the table's id column.
  function setKind(kind, idColumn) {
    state.kind = kind;
    if (idColumn) state.idColumn = visible(idColumn);
    const table = kind === "table";
    const series = kind === "series";
    document.body.classList.toggle("table-run", table);
    document.body.classList.toggle("series-run", series);
    els.detailImg.hidden = table;
    els.detailFeatures.hidden = !table;
    if (table || series) els.detailNoOverlay.hidden = true;
    els.pathTerm.textContent = table ? state.idColumn : series ? "Event" : "Path";
    els.gallery.setAttribute("aria-label", table ? "Table rows in rank order" : series ? "Events in rank order"
      : "Images in rank order");
  }

  function stripTokenFromAddressBar() {
    // The token now lives in the HttpOnly cookie; keep it out of history and screenshots.
    const url = new URL(window.location.href);
    if (url.searchParams.has("token")) {
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  function init() {
    els = {
      gallery: $("gallery"), counts: $("counts"), rerank: $("rerank"), shown: $("shown"),
      strategy: $("strategy"), filterLabel: $("filter-label"), filterDecision: $("filter-decision"),
      overlay: $("overlay"), exportLink: $("export"), helpButton: $("help-button"), help: $("help"),
      empty: $("empty"), more: $("more"), toast: $("toast"), authError: $("auth-error"),
      detail: $("detail"), detailImg: $("detail-img"), detailTitle: $("detail-title"),
      detailOverlay: $("detail-overlay"), detailNoOverlay: $("detail-nooverlay"),
      detailClose: $("detail-close"), detailPrev: $("detail-prev"), detailNext: $("detail-next"),
      detailFeatures: $("detail-features"), pathTerm: $("d-path-term"),
    };
    try { state.overlay = localStorage.getItem("normalcy.overlay") === "1"; } catch (_) { /* private mode */ }
    els.overlay.checked = state.overlay;
    els.detailOverlay.checked = state.overlay;

    document.addEventListener("keydown", onKey);
    els.overlay.addEventListener("change", () => setOverlay(els.overlay.checked));
    els.detailOverlay.addEventListener("change", () => setOverlay(els.detailOverlay.checked));
    els.filterLabel.addEventListener("change", () => {
      state.label = els.filterLabel.value;
      enqueue(() => reload(null, true));
    });
    els.filterDecision.addEventListener("change", () => {
      state.decision = els.filterDecision.value;
      enqueue(() => reload(null, true));
    });
    els.strategy.addEventListener("change", () => {
      const value = els.strategy.value;
      enqueue(async () => {
        try {
          await api("PUT", "/api/strategy", { strategy: value });
        } catch (err) {
          els.strategy.value = state.strategy;
          throw err;
        }
        await reload();
        toast("ranking strategy: " + value);
      });
    });
    els.more.addEventListener("click", () => enqueue(loadMore));
    els.helpButton.addEventListener("click", () => els.help.showModal());
    els.detailClose.addEventListener("click", () => els.detail.close());
    els.detailPrev.addEventListener("click", () => move(-1));
    els.detailNext.addEventListener("click", () => move(1));
    els.detail.addEventListener("click", (ev) => {
      if (ev.target === els.detail) els.detail.close(); // a click on the backdrop
    });
    els.detail.addEventListener("close", () => {
      els.gallery.focus({ preventScroll: true });
      updateSelection(true);
    });
    for (const b of els.detail.querySelectorAll("button[data-label]")) {
      b.addEventListener("click", () => {
        const v = b.dataset.label;
        if (v === "clear") labelSelected("clear");
        else labelSelected("label", v);
        els.detail.focus(); // so a later Enter does not press the button again on the next item
      });
    }
    for (const b of els.detail.querySelectorAll("button[data-interest]")) {
      b.addEventListener("click", () => {
        labelSelected("interest", Number(b.dataset.interest));
        els.detail.focus();
      });
    }

    enqueue(async () => {
      await reload(null, true);
      stripTokenFromAddressBar();
      els.gallery.focus({ preventScroll: true });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
