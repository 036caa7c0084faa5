"""t-SNE and the Gaussian mixture on features whose structure is known."""
import numpy as np
import pytest

from minicnn.viz.embed import EmbedConfig, cluster_scores, embed, fit_gmm, reduce


def blobs(per_class=40, classes=4, dims=60, spread=0.3, seed=0):
    """Well separated Gaussian clusters in `dims` dimensions, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dims))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dims)), labels


def test_scores_against_hand_computed_cases():
    labels = np.array([0, 0, 1, 1, 2, 2])
    same = cluster_scores(labels, np.array([5, 5, 3, 3, 9, 9]))  # the same partition, renamed
    assert same == pytest.approx({"adjusted_rand_index": 1.0, "normalized_mutual_info": 1.0})
    one = cluster_scores(labels, np.zeros(6, int))  # everything in one cluster tells nothing
    assert one["adjusted_rand_index"] == pytest.approx(0.0) and one["normalized_mutual_info"] == pytest.approx(0.0)


def test_the_mixture_recovers_separated_classes_and_not_noise():
    features, labels = blobs()
    clusters = fit_gmm(reduce(features), 4)
    assert cluster_scores(labels, clusters)["adjusted_rand_index"] > 0.95
    noise = np.random.default_rng(1).normal(size=features.shape)
    assert cluster_scores(labels, fit_gmm(reduce(noise), 4))["adjusted_rand_index"] < 0.1
    with pytest.raises(ValueError, match="--gmm needs between 1 and 160"):
        fit_gmm(features, 0)


def test_tsne_keeps_neighbours_of_the_same_class_together():
    features, labels = blobs()
    result = embed(features, labels, components=4, config=EmbedConfig(perplexity=15), progress=False)
    assert result.coords.shape == (160, 2)
    distances = np.linalg.norm(result.coords[:, None] - result.coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).mean() > 0.95   # nearest neighbour's class
    assert result.scores["normalized_mutual_info"] > 0.9
    again = embed(features, labels, config=EmbedConfig(perplexity=15), progress=False)
    np.testing.assert_allclose(again.coords, result.coords)  # seeded: reruns agree
    assert again.clusters is None and again.scores is None


def test_pca_keeps_low_dimensional_features_and_reduces_wide_ones():
    features, _ = blobs(dims=20)
    np.testing.assert_array_equal(reduce(features, EmbedConfig(pca_dims=50)), features)
    assert reduce(features, EmbedConfig(pca_dims=5)).shape == (160, 5)
