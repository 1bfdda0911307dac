"""Embedding scorers against independent implementations (scikit-learn), on fixed embeddings."""

import copy
import logging

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from estm_ref.errors import InputError
from estm_ref.pipeline.kmeans import kmeans
from estm_ref.pipeline.model_pass import ModelPass
from estm_ref.pipeline.scorers import SCORERS, group_rows, make_scorer

DIM = 16
IDS = [("fan", "00"), ("fan", "01"), ("valve", "02")]
N_TRAIN = {("fan", "00"): 40, ("fan", "01"): 25, ("valve", "02"): 10}  # valve: fewer clips than DIM


EMBEDDING_SCORERS = ("knn", "centres", "mahalanobis")


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pass(x, nll=None):
    """A model pass of embeddings x (and -log p nll, halved without the margin)."""
    nll = np.zeros(len(x)) if nll is None else np.asarray(nll, dtype=np.float64)
    return ModelPass(nll, nll / 2, np.asarray(x))


def fit_scorer(name, train_by_id=None, **params):
    """Scorer `name` fitted on {(type, id): (n, DIM) embeddings}."""
    train_by_id = train_by_id or {}
    keys = [key for key, x in train_by_id.items() for _ in range(len(x))]
    x = np.concatenate(list(train_by_id.values())) if train_by_id else np.zeros((0, DIM))
    return make_scorer(name, params).fit(_pass(x), keys)


def _score(scorer, key, x):
    return scorer.score(_pass(x), [key] * len(x))


def _training_scores(scorer, key, x):
    return scorer.training_scores(_pass(x), [key] * len(x))


@pytest.fixture(scope="module")
def data():
    """Training and test embeddings per ID: each ID a cloud around its own direction, with a
    different spread per dimension, so that the covariance is not a multiple of I."""
    rng = np.random.default_rng(7)
    train, test = {}, {}
    for key in IDS:
        direction = rng.normal(size=DIM) * 3
        spread = rng.uniform(0.2, 1.5, size=DIM)
        train[key] = direction + rng.normal(size=(N_TRAIN[key], DIM)) * spread
        test[key] = direction + rng.normal(size=(12, DIM)) * spread * rng.uniform(0.5, 3, (12, 1))
    return train, test


def test_the_registry_holds_the_papers_scorer_first_and_the_embedding_ones():
    assert list(SCORERS) == ["nll", *EMBEDDING_SCORERS]


@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_is_mean_cosine_distance_to_k_nearest_training_embeddings(data, k):
    train, test = data
    fitted = fit_scorer("knn", train, k=k)
    for key in IDS:
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(train[key])
        dist, _ = nn.kneighbors(test[key])
        np.testing.assert_allclose(_score(fitted, key, test[key]), dist.mean(axis=1),
                                   rtol=1e-9, atol=1e-12)
        # training scores leave each clip out of its own neighbours
        dist, _ = nn.kneighbors()
        np.testing.assert_allclose(_training_scores(fitted, key, train[key]), dist.mean(axis=1),
                                   rtol=1e-9, atol=1e-12)


def test_knn_with_fewer_training_clips_than_k_uses_all_and_says_so(data, caplog):
    train, test = data
    key = ("valve", "02")
    with caplog.at_level(logging.WARNING):
        fitted = fit_scorer("knn", {key: train[key]}, k=50)
    assert "valve/id_02 (10)" in caplog.text
    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(train[key])
    np.testing.assert_allclose(_score(fitted, key, test[key]), nn.kneighbors(test[key])[0].mean(1),
                               rtol=1e-9, atol=1e-12)


def test_mahalanobis_matches_sklearn_ledoit_wolf_on_normalised_embeddings(data):
    train, test = data
    fitted = fit_scorer("mahalanobis", train)
    for key in IDS:
        lw = LedoitWolf().fit(_unit(train[key]))
        gaussian = fitted.states[key]
        assert gaussian.shrinkage == pytest.approx(lw.shrinkage_, rel=1e-9)
        assert 0 < lw.shrinkage_ < 1  # the data exercise the shrinkage, not an edge of it
        np.testing.assert_allclose(gaussian.mean, lw.location_, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gaussian.precision, lw.precision_, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(_score(fitted, key, test[key]),
                                   lw.mahalanobis(_unit(test[key])), rtol=1e-7)
        # scale does not matter: embeddings are L2-normalised first
        np.testing.assert_allclose(_score(fitted, key, 5 * test[key]),
                                   _score(fitted, key, test[key]), rtol=1e-12)


def _well_separated(rng, n_clusters, per_cluster):
    centres = _unit(rng.normal(size=(n_clusters, DIM)))
    return np.concatenate([c + 0.02 * rng.normal(size=(per_cluster, DIM)) for c in centres])


@pytest.mark.parametrize("n_centres", [1, 3])
def test_centres_match_sklearn_kmeans_and_score_least_cosine_distance(n_centres):
    rng = np.random.default_rng(3)
    train = {("pump", f"0{i}"): _well_separated(rng, n_centres, 15) for i in range(2)}
    test = {key: x[::3] + 0.3 * rng.normal(size=x[::3].shape) for key, x in train.items()}
    fitted = fit_scorer("centres", train, n_centres=n_centres, seed=0)
    for key, x in train.items():
        ref = KMeans(n_clusters=n_centres, n_init=10, random_state=0).fit(_unit(x)).cluster_centers_
        mine = fitted.states[key]
        order = lambda c: c[np.lexsort(c.T[::-1])]  # noqa: E731 - the same rows in one order
        np.testing.assert_allclose(order(mine), order(ref), rtol=1e-6, atol=1e-9)
        expected = np.array([[1 - np.dot(_unit(t[None])[0], _unit(c[None])[0]) for c in ref]
                             for t in test[key]]).min(axis=1)
        np.testing.assert_allclose(_score(fitted, key, test[key]), expected, rtol=1e-7, atol=1e-12)


def test_kmeans_ends_at_a_fixed_point_of_lloyd_and_is_seeded(data):
    x = _unit(data[0][("fan", "00")])
    centres = kmeans(x, 4, seed=1)
    assign = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert sorted(set(assign)) == [0, 1, 2, 3]  # no empty cluster
    for c in range(4):
        np.testing.assert_allclose(centres[c], x[assign == c].mean(0), atol=1e-10)
    np.testing.assert_array_equal(kmeans(x, 4, seed=1), centres)
    inertia = lambda c: ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum()  # noqa: E731
    sk = KMeans(n_clusters=4, n_init=10, random_state=0).fit(x)
    assert inertia(centres) <= sk.inertia_ * (1 + 0.05)  # a local optimum as good as sklearn's


@pytest.mark.parametrize("name", EMBEDDING_SCORERS)
def test_scoring_test_clips_changes_no_fitted_statistic(data, name):
    train, test = data
    fitted = fit_scorer(name, train)
    before = copy.deepcopy(fitted.states)
    keys = [key for key in IDS for _ in range(len(test[key]))]
    everything = np.concatenate([test[key] for key in IDS])
    together = fitted.score(_pass(everything), keys)
    for key in IDS:  # a clip's score does not depend on the other clips scored with it
        alone = np.array([_score(fitted, key, t[None])[0] for t in test[key]])
        # (up to rounding: BLAS sums a batch of rows in a different order than a single row)
        np.testing.assert_allclose(together[[i for i, k in enumerate(keys) if k == key]], alone,
                                   rtol=1e-12, atol=1e-15)
    # neither scoring nor refitting on the training clips alone changes a statistic
    for states in (fitted.states, fit_scorer(name, train).states):
        assert set(states) == set(before)
        for key in before:
            for got, want in zip(_arrays(states[key]), _arrays(before[key]), strict=True):
                np.testing.assert_array_equal(got, want)


def _arrays(state):
    """The arrays of a fitted per-ID state (a tuple, an array or a Gaussian)."""
    if isinstance(state, tuple):
        return [np.asarray(v) for v in state]
    if isinstance(state, np.ndarray):
        return [state]
    return [state.mean, state.precision, np.asarray(state.shrinkage)]


@pytest.mark.parametrize("name", EMBEDDING_SCORERS)
def test_a_clip_far_from_its_id_scores_higher_than_one_near_it(data, name):
    train, _ = data
    fitted = fit_scorer(name, train)
    key, other = ("fan", "00"), ("valve", "02")
    near = train[key].mean(0, keepdims=True)
    far = train[other].mean(0, keepdims=True)
    assert _score(fitted, key, far)[0] > _score(fitted, key, near)[0]


def test_nll_passes_the_scoring_pass_values_through_in_clip_order(data):
    _, test = data
    keys = [("fan", "00"), ("valve", "02"), ("fan", "00")]
    clips = _pass(np.stack([test[k][0] for k in keys]), [0.5, 2.0, 7.0])
    np.testing.assert_array_equal(fit_scorer("nll").score(clips, keys), [0.5, 2.0, 7.0])
    np.testing.assert_array_equal(fit_scorer("nll", margin=False).score(clips, keys),
                                  [0.25, 1.0, 3.5])


def test_group_rows_and_scores_keep_clip_order(data):
    train, test = data
    keys = [("valve", "02"), ("fan", "00"), ("valve", "02")]
    x = np.stack([test[("valve", "02")][0], test[("fan", "00")][0], test[("valve", "02")][1]])
    grouped = group_rows(keys)
    assert list(grouped) == [("fan", "00"), ("valve", "02")]
    np.testing.assert_array_equal(grouped[("valve", "02")], [0, 2])
    fitted = fit_scorer("knn", train, k=2)
    np.testing.assert_allclose(fitted.score(_pass(x), keys),
                               [_score(fitted, k, e[None])[0] for k, e in zip(keys, x)],
                               rtol=1e-12, atol=1e-15)


def test_errors_name_the_problem(data):
    train, test = data
    with pytest.raises(InputError, match="unknown scorer 'gmm'.*nll, knn, centres, mahalanobis"):
        fit_scorer("gmm", train)
    fitted = fit_scorer("knn", {("fan", "00"): train[("fan", "00")]})
    with pytest.raises(ValueError, match="no training embeddings of pump/id_03 .*fan/id_00"):
        _score(fitted, ("pump", "03"), test[("fan", "00")])
    with pytest.raises(ValueError, match="fitted on 16"):
        _score(fitted, ("fan", "00"), test[("fan", "00")][:, :8])
    with pytest.raises(ValueError, match="needs training embeddings"):
        fit_scorer("centres", {})
    with pytest.raises(ValueError, match="fan/id_00: a covariance needs at least 2"):
        fit_scorer("mahalanobis", {("fan", "00"): train[("fan", "00")][:1]})
    with pytest.raises(ValueError, match="fan/id_00: training embeddings contain NaN or inf"):
        fit_scorer("knn", {("fan", "00"): np.full((3, DIM), np.nan)})
    with pytest.raises(InputError, match="knn scorer: k must be at least 1"):
        fit_scorer("knn", train, k=0)
    with pytest.raises(InputError, match="centres scorer: n_centres must be at least 1"):
        fit_scorer("centres", train, n_centres=0)


def test_thresholds_per_scorer_come_from_held_out_clips_where_an_id_has_two(data, caplog,
                                                                           monkeypatch):
    from estm_ref.pipeline import scoring
    from estm_ref.pipeline.scoring import fit_scorers
    from estm_ref.pipeline.training_pass import TrainingPass

    # record what each gamma fit is given (the fit itself, ill-conditioned on a few scores,
    # is tested in test_metrics); the "threshold" is the index of the recorded scores
    fits = []
    monkeypatch.setattr(scoring, "gamma_threshold",
                        lambda s: fits.append(np.array(s)) or len(fits) - 1)
    train, test = data
    a, b = ("fan", "00"), ("valve", "02")  # a: 3 held-out clips; b: 1, so its training clips
    parts = [(a, train[a], False), (a, test[a][:3], True), (b, train[b], False),
             (b, test[b][:1], True)]
    keys = [key for key, x, _ in parts for _ in x]
    held = np.concatenate([[h] * len(x) for _, x, h in parts])
    embeddings = np.concatenate([x for _, x, _ in parts]).astype(np.float32)
    nll = np.random.default_rng(0).gamma(2.0, 1.0, len(keys))
    training = TrainingPass(keys, held, [f"{i}.wav" for i in range(len(keys))],
                            ModelPass(nll, nll / 2, embeddings), [a, b], "digest")
    with caplog.at_level(logging.WARNING):
        scorers = fit_scorers(training, list(SCORERS), {"k": 3})
    assert "thresholds from training clips for valve/id_02" in caplog.text
    e64 = embeddings.astype(np.float64)

    def rows(key, held_out):
        return [k == key and h == held_out for k, h in zip(keys, held)]

    assert len(scorers.fitted["knn"].states[a][0]) == len(train[a])  # held-out clips left out
    nn = {key: NearestNeighbors(n_neighbors=3, metric="cosine", algorithm="brute")
          .fit(e64[rows(key, False)]) for key in (a, b)}
    lw = {key: LedoitWolf().fit(_unit(e64[rows(key, False)])) for key in (a, b)}
    expected = {
        ("nll", a): nll[rows(a, True)],
        ("nll", b): nll[rows(b, False)],
        ("knn", a): nn[a].kneighbors(e64[rows(a, True)])[0].mean(1),
        ("knn", b): nn[b].kneighbors()[0].mean(1),  # leave-one-out
        ("mahalanobis", a): lw[a].mahalanobis(_unit(e64[rows(a, True)])),
        ("mahalanobis", b): lw[b].mahalanobis(_unit(e64[rows(b, False)])),
    }
    for (name, key), scores in expected.items():
        fitted_on = fits[scorers.thresholds[name][f"{key[0]}/id_{key[1]}"]]
        np.testing.assert_allclose(fitted_on, scores, rtol=1e-7, err_msg=f"{name} {key}")
    assert len(fits[scorers.thresholds["centres"]["fan/id_00"]]) == 3
    assert len(fits[scorers.thresholds["centres"]["valve/id_02"]]) == len(train[b])
    no_margin = fit_scorers(training, ["nll"], {"margin": False})  # the nll it is compared with
    np.testing.assert_array_equal(fits[no_margin.thresholds["nll"]["fan/id_00"]],
                                  expected[("nll", a)] / 2)


def test_a_registered_scorer_is_a_choice_with_its_own_flags(monkeypatch):
    """Adding a scorer is one registered class: the command line offers its name and a flag
    per parameter with a help text, and `make_scorer` hands it the parsed values."""
    import argparse

    from estm_ref.cli import scorer_flags as flags
    from estm_ref.cli.scorer_flags import add_scorer_arguments, scorer_params
    from estm_ref.pipeline import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(SCORERS))

    @scorers.register("norm", "the embedding's norm")
    class Norm(scorers.Scorer):
        power: float = scorers.parameter(2.0, "the norm's power")

        def score(self, clips, ids):
            return np.linalg.norm(clips.embeddings, ord=self.power, axis=1)

    monkeypatch.setattr(flags, "SCORERS", scorers.SCORERS)
    parser = argparse.ArgumentParser()
    add_scorer_arguments(parser)
    args = parser.parse_args(["--scorer", "norm", "--power", "1", "--k", "3", "--no-margin"])
    params = scorer_params(args)
    assert params == {"margin": False, "k": 3, "n_centres": 4, "power": 1.0}
    scorer = scorers.make_scorer(args.scorer, params)
    np.testing.assert_allclose(scorer.score(_pass(np.array([[3.0, -4.0]])), [("fan", "00")]), [7.0])
    assert scorers.make_scorer("knn", params).k == 3
    assert "norm: the embedding's norm" in " ".join(parser.format_help().split())
