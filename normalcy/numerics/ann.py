"""Nearest neighbours past a RAM budget: faiss IVF-PQ, shared by PatchCore's bank and ``vectors.KNNDetector``.

An IVF-PQ index is kept as three plain arrays, never as a faiss serialisation: the IVF cell centres
(cells x D), the product quantiser's codebook (M x ksub x D/M) and the codes (one row of bytes per
indexed row, in row order: the cell number, then the PQ code, as faiss's ``sa_encode`` writes them).
A model file then holds nothing for faiss to parse: ``check_ivfpq`` checks the arrays against each
other, and ``ivfpq_index`` rebuilds the index from them, so a fitted and a loaded model search alike.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import faiss
import numpy as np

# faiss only uses BLAS for exhaustive search above a large query count; one image's
# ~800 patches then take 6x longer than in a batch. BLAS is faster from a few queries on.
faiss.cvar.distance_compute_blas_threshold = 16

PQ_MIN_ROWS = 256  # too few rows to train a codebook on; such a bank is at most a few hundred kB anyway


@contextmanager
def row_by_row() -> Iterator[None]:
    """faiss computes distances row by row, not by BLAS over the batch, inside the block.

    BLAS rounds differently with the batch's size, which can change a row's IVF cells and so its
    neighbours; row by row, a row's result is the same in any batch and on any number of threads."""
    blas = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1 << 30
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = blas


def fit_ivfpq(Z: np.ndarray, rng: np.random.Generator, dims_per_byte: int,
              sample: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells, codebook and codes of the rows of Z (float32): 4 sqrt(n) cells, one byte of code per
    ``dims_per_byte`` dimensions (4 bits under 9,984 rows, too few for 256 centroids a byte), trained on at
    most ``sample`` rows and encoded in chunks (a million rows need no second full-size copy).

    On ADBench's 512-d embeddings (``bench/knn_pq.py``) AUROC moves by 0.001 against exact search with 8 or 4
    dimensions a byte, and 8 needs half the code lookups a row."""
    n, d = Z.shape
    cells = int(min(max(1, 4 * np.sqrt(n)), n // 39 or 1))
    m = next(m for m in range(max(1, d // dims_per_byte), 0, -1) if d % m == 0)
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, cells, m, 8 if n >= 256 * 39 else 4)
    index.cp.min_points_per_centroid = 1
    index.train(np.ascontiguousarray(Z[rng.choice(n, min(n, sample), replace=False)], dtype=np.float32))
    centres = index.quantizer.reconstruct_n(0, index.nlist)
    codebook = faiss.vector_to_array(index.pq.centroids).reshape(index.pq.M, index.pq.ksub, index.pq.dsub)
    codes = np.concatenate([index.sa_encode(np.ascontiguousarray(Z[s:s + 100_000], dtype=np.float32))
                            for s in range(0, n, 100_000)])
    return centres, codebook, codes


def empty_ivfpq(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells, codebook and codes of no IVF-PQ index (the rows are kept as floats), in the arrays' usual dtypes."""
    return np.zeros((0, d), np.float32), np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.uint8)


def check_ivfpq(cells: np.ndarray, codebook: np.ndarray, codes: np.ndarray, d: int) -> None:
    """Raise ValueError unless the arrays make an IVF-PQ index of d-dimensional rows (before faiss reads them)."""
    if codebook.ndim != 3 or codebook.shape[1] not in (16, 256) or codebook.shape[0] * codebook.shape[2] != d:
        raise ValueError(f"PQ codebook {codebook.shape} does not fit {d}-dimensional rows")
    if cells.ndim != 2 or not len(cells) or cells.shape[1] != d:
        raise ValueError(f"IVF cells {cells.shape} do not fit {d}-dimensional rows")
    m, ksub, _ = codebook.shape
    cell_bytes = ((len(cells) - 1).bit_length() + 7) // 8
    width = cell_bytes + (m * (ksub.bit_length() - 1) + 7) // 8
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width or not len(codes):
        raise ValueError(f"PQ codes {codes.shape} ({codes.dtype}) do not fit the codebook {codebook.shape} and "
                         f"{len(cells)} cells: expected uint8 rows of {width} bytes")
    cell = codes[:, :cell_bytes].astype(np.int64) @ (256 ** np.arange(cell_bytes, dtype=np.int64))
    if cell.max(initial=0) >= len(cells):
        raise ValueError(f"PQ codes name cell {cell.max()}, of {len(cells)} cells")


def ivfpq_index(cells: np.ndarray, codebook: np.ndarray, codes: np.ndarray, nprobe: int,
                precompute: bool) -> faiss.IndexIVFPQ:
    """The faiss index of checked arrays (row i of codes gets id i). ``precompute`` builds faiss's table of
    cell-to-centroid terms (cells x M x ksub floats): faster search, at that memory."""
    d = cells.shape[1]
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(np.ascontiguousarray(cells, dtype=np.float32))
    m, ksub, _ = codebook.shape
    index = faiss.IndexIVFPQ(quantizer, d, len(cells), m, ksub.bit_length() - 1)
    index.referenced_objects = [quantizer]  # the index uses the quantizer: keep it alive as long
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    if precompute:
        index.precompute_table()
    index.add_sa_codes(np.ascontiguousarray(codes), np.arange(len(codes), dtype=np.int64))
    index.nprobe = nprobe
    return index
