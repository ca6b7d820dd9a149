"""Steps 3-5 of the CARE-set construction on given matrices (:mod:`.build` runs the whole construction): residuals
orthogonal to the reference word, t-SNE + k-means clustering, the dropping of the nearest and farthest clusters,
and the leave-one-out refinement inside the kept ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

class CareSetInputError(ValueError):
    """The images, the reference word or the settings cannot give a CARE-set."""


KEPT = "kept"
DROPPED_LOW = "dropped: its cluster is the closest to the reference word (near-synonyms)"
DROPPED_HIGH = "dropped: its cluster is the farthest from the reference word (unrelated)"
REFINED_AWAY = "dropped: leave-one-out outlier inside its cluster"


@dataclass
class ClusterSelection:
    """Result of clustering and the two removal rules over n words (arrays indexed like the rows of W)."""

    similarities: np.ndarray
    residual_norms: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    cluster_order: list[int]
    dropped_low: list[int]
    dropped_high: list[int]
    refined_away: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        dropped = set(self.dropped_low) | set(self.dropped_high)
        return np.array([lab not in dropped for lab in self.labels]) & ~self.refined_away

    def reason(self, index: int) -> str:
        label = int(self.labels[index])
        if label in self.dropped_low:
            return DROPPED_LOW
        if label in self.dropped_high:
            return DROPPED_HIGH
        return REFINED_AWAY if self.refined_away[index] else KEPT


def _orthogonal_to(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` minus their component along ``reference``: v (I - c cᵀ/‖c‖²)."""
    return vectors - np.outer(vectors @ reference, reference) / (reference @ reference + 1e-12)


def residual_statistics(words: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity to the reference, residual norm) per word, for L2-normalised rows, rounded to 1e-12
    (so that they, and the clusters ranked by them, do not depend on the BLAS)."""
    words, reference = np.asarray(words, np.float64), np.asarray(reference, np.float64)
    similarities = np.einsum("nd,d->n", words, reference, optimize=False)
    residuals = np.sqrt(np.einsum("nd,nd->n", *(2 * [_orthogonal_to(words, reference)]), optimize=False))
    return _rounded(similarities, 12), _rounded(residuals, 12)


def _rounded(values: np.ndarray, decimals: int) -> np.ndarray:
    """``values`` rounded in float64 (machine-level differences below the last decimal are absorbed)."""
    return np.round(np.asarray(values, np.float64), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def squared_distances(words: np.ndarray) -> np.ndarray:
    """Squared euclidean distances between the rows, in float64 without BLAS (a fixed summation order),
    rounded to 1e-9: the same on every machine and thread count for the same rows."""
    words = np.asarray(words, np.float64)
    differences = words[:, None, :] - words[None, :, :]
    return _rounded(np.einsum("ijk,ijk->ij", differences, differences, optimize=False), 9)


def pca_init(words: np.ndarray) -> np.ndarray:
    """t-SNE's ``init="pca"`` made machine-independent: the top-2 principal components (float64, each
    component's sign fixed so that its largest projection is positive), scaled so that the first column has
    standard deviation 1e-4 as scikit-learn does, rounded to 1e-12."""
    centred = np.asarray(words, np.float64) - np.asarray(words, np.float64).mean(axis=0)
    values, vectors = np.linalg.eigh(np.einsum("ni,nj->ij", centred, centred, optimize=False))
    projection = centred @ vectors[:, np.argsort(-values, kind="stable")[:2]]
    projection = _rounded(projection, 9)
    signs = np.sign(projection[np.abs(projection).argmax(axis=0), [0, 1]])
    projection = projection * np.where(signs == 0, 1.0, signs)
    return _rounded(projection / projection[:, 0].std() * 1e-4, 12).astype(np.float32)


def tsne_kmeans(words: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's global clustering: t-SNE to 2-D (init pca, learning rate auto, seeded), k-means there.

    The same inputs give the same clusters on every thread count and BLAS: t-SNE reads rounded float64 squared
    distances and a deterministic PCA init (:func:`squared_distances`, :func:`pca_init`, the quantities
    scikit-learn would compute itself for ``metric="euclidean"``), runs single-threaded, and k-means clusters
    its output rounded to 1e-6."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = words.shape[0]
    if n < max(n_clusters, 2):
        raise CareSetInputError(f"Only {n} candidate words for {n_clusters} clusters.")
    tsne = TSNE(n_components=2, random_state=seed, init=pca_init(words), learning_rate="auto",
                perplexity=float(min(30.0, n - 1)), metric="precomputed")
    # A few hundred points: one thread is fastest, and OpenMP pools fighting torch's own pool were measured
    # 10-30x slower on a busy 2-core machine.
    with threadpool_limits(limits=1):
        coords = _rounded(tsne.fit_transform(squared_distances(words).astype(np.float32)), 6)
        labels = KMeans(n_clusters=n_clusters, random_state=seed, n_init="auto").fit_predict(coords)
    return coords, labels


def rank_clusters(labels: np.ndarray, residual_norms: np.ndarray,
                  k_each_side: int) -> tuple[list[int], list[int], list[int]]:
    """(cluster ids by increasing mean residual norm, the lowest k dropped, the highest k dropped), with
    k = min(k_each_side, number of clusters // 2)."""
    present = sorted({int(label) for label in labels})
    means = {c: float(np.mean(residual_norms[labels == c])) for c in present}
    order = sorted(present, key=lambda c: means[c])
    k = min(k_each_side, len(order) // 2)
    return order, order[:k], (order[-k:] if k else [])


def leave_one_out_outliers(words: np.ndarray, reference: np.ndarray, labels: np.ndarray, clusters: list[int],
                           alpha: float, min_cluster_size: int) -> np.ndarray:
    """Boolean mask of words dropped by intra-cluster refinement in ``clusters``: d_i = ‖(mean of the others)
    orthogonal to c‖², dropped when d_i > (1 + alpha) · mean_{j≠i} d_j. Clusters below ``min_cluster_size``
    are left alone."""
    words, reference = np.asarray(words, np.float64), np.asarray(reference, np.float64)
    dropped = np.zeros(len(labels), dtype=bool)
    for cluster in clusters:
        members = np.flatnonzero(labels == cluster)
        size = len(members)
        if size < max(min_cluster_size, 2):
            continue
        group = words[members]
        others_mean = (group.sum(axis=0, keepdims=True) - group) / (size - 1)
        d = (_orthogonal_to(others_mean, reference) ** 2).sum(axis=1)
        mean_of_others = (d.sum() - d) / (size - 1)
        dropped[members[d > (1.0 + alpha) * mean_of_others]] = True
    return dropped


def select_care_words(words: np.ndarray, reference: np.ndarray, n_clusters: int = 7, k_each_side: int = 1,
                      alpha: float = 0.01, min_cluster_size: int = 2, seed: int = 42) -> ClusterSelection:
    """Steps 3-5 of the construction on L2-normalised word embeddings ``words`` (n, D) and ``reference`` (D,)."""
    similarities, residual_norms = residual_statistics(words, reference)
    coords, labels = tsne_kmeans(words, n_clusters, seed)
    order, low, high = rank_clusters(labels, residual_norms, k_each_side)
    kept_clusters = [c for c in order if c not in low and c not in high]
    refined = leave_one_out_outliers(words, reference, labels, kept_clusters, alpha, min_cluster_size)
    return ClusterSelection(similarities, residual_norms, coords, labels, order, low, high, refined)
