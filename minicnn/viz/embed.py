"""A 2-D map of what a layer has learned (t-SNE), and whether its features form the classes on
their own (a Gaussian mixture fitted without labels, scored against the labels).

Features are first reduced with PCA (to `pca_dims`): t-SNE and the mixture then work on the
directions that carry the variance, which is both faster and better conditioned than fitting
full covariances in thousands of raw dimensions (a 4x4x256 conv output has 4096).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from minicnn.progress import hide_bar

# scikit-learn (with SciPy) takes seconds to import: each function below imports what it uses,
# so `minicnn --help` and every command that draws no t-SNE start without it.


@dataclass(frozen=True)
class EmbedConfig:
    perplexity: float = 30.0   # t-SNE's effective neighbour count (lowered for tiny sets)
    pca_dims: int = 50         # PCA before t-SNE and the mixture
    covariance: str = "full"   # GaussianMixture covariance_type
    seed: int = 0
    threads: int | None = None  # OpenMP/BLAS threads; None: the cores not already busy


def free_cores() -> int:
    """Cores not taken by other work (by the 1-minute load average), at least 1.

    scikit-learn's t-SNE runs OpenMP threads that spin while they wait: on cores that are
    already busy (a training run, a test suite) they slow it down 5-30x instead of helping."""
    cores = os.cpu_count() or 1
    if not hasattr(os, "getloadavg"):
        return cores
    return max(1, cores - round(os.getloadavg()[0]))


def reduce(features: np.ndarray, config: EmbedConfig = EmbedConfig()) -> np.ndarray:
    """features: (N, D) -> (N, min(pca_dims, N, D)) principal components (float64)."""
    from sklearn.decomposition import PCA
    dims = min(config.pca_dims, *features.shape)
    if dims == features.shape[1]:
        return features.astype(np.float64)
    return PCA(dims, random_state=config.seed).fit_transform(features.astype(np.float64))


def tsne(points: np.ndarray, config: EmbedConfig = EmbedConfig()) -> np.ndarray:
    """points: (N, d) -> (N, 2) t-SNE coordinates (PCA-initialized, so reruns agree)."""
    from sklearn.manifold import TSNE
    if len(points) < 5:
        raise ValueError(f"t-SNE needs at least 5 samples, got {len(points)}")
    perplexity = min(config.perplexity, (len(points) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=config.seed).fit_transform(points)


def fit_gmm(points: np.ndarray, components: int, config: EmbedConfig = EmbedConfig()) -> np.ndarray:
    """Cluster (N, d) points into `components` Gaussians; returns each point's cluster (N,)."""
    if not 1 <= components <= len(points):
        raise ValueError(f"--gmm needs between 1 and {len(points)} components (the sample count), "
                         f"got {components}")
    from sklearn.mixture import GaussianMixture
    mixture = GaussianMixture(components, covariance_type=config.covariance, reg_covar=1e-4,
                              random_state=config.seed)
    return mixture.fit_predict(points)


def cluster_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """How well unsupervised clusters match the labels: adjusted Rand index (0 = chance, 1 =
    the same partition) and normalized mutual information (0 = independent, 1 = identical)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    return {"adjusted_rand_index": float(adjusted_rand_score(labels, clusters)),
            "normalized_mutual_info": float(normalized_mutual_info_score(labels, clusters))}


@dataclass
class Embedding:
    coords: np.ndarray                  # (N, 2) t-SNE coordinates
    labels: np.ndarray                  # (N,) true classes
    clusters: np.ndarray | None = None  # (N,) mixture components, when asked for
    scores: dict | None = None          # cluster_scores(labels, clusters)


def embed(features: np.ndarray, labels: np.ndarray, components: int | None = None,
          config: EmbedConfig = EmbedConfig(), progress: bool = True) -> Embedding:
    """PCA, then t-SNE, then (if components) a Gaussian mixture, with a bar over the stages."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn, which uses it itself
    stages = ["PCA", "t-SNE"] + (["GMM"] if components else [])
    with threadpool_limits(config.threads or free_cores()), \
            tqdm(total=len(stages), desc=f"embedding {len(features)} points", unit="stage",
                 disable=hide_bar(progress)) as bar:
        def stage(name, work):
            bar.set_postfix_str(name)
            result = work()
            bar.update()
            return result
        points = stage("PCA", lambda: reduce(features, config))
        coords = stage("t-SNE", lambda: tsne(points, config))
        if not components:
            return Embedding(coords, labels)
        clusters = stage("GMM", lambda: fit_gmm(points, components, config))
    return Embedding(coords, labels, clusters, cluster_scores(labels, clusters))
