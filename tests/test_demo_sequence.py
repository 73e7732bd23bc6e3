"""The embedded sequence demo: generated motif sequences, the shipped transformer, and its report."""
import json

import pytest
import torch

from captum_layerpair import LayerPairAttribution, aggregate
from captum_layerpair._random import rng_state
from captum_layerpair.demo_sequence import (ALPHABET, LENGTH, MOTIFS, TEST_SEED, WEIGHTS, MotifClassifier,
                                            default_sequence_encoder, demo_sources, make_motif_sequences, run_demo,
                                            train_motif_transformer)


def test_generated_sequences_hold_each_motif_where_the_ground_truth_says():
    before = rng_state()
    data = make_motif_sequences(50, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before.torch_cpu)  # no global RNG touched
    assert data.sequences.shape == (50, LENGTH, 4) and torch.equal(data.sequences.sum(-1), torch.ones(50, LENGTH))
    letters = ["".join(ALPHABET[i] for i in row) for row in data.sequences.argmax(-1).tolist()]
    for text, labels, positions in zip(letters, data.labels, data.positions):
        for m, motif in enumerate(MOTIFS):
            covered = (positions == m + 1).nonzero().flatten().tolist()
            assert bool(labels[m]) == bool(covered)
            if covered:
                assert covered == list(range(covered[0], covered[0] + len(motif)))
                assert text[covered[0]:covered[0] + len(motif)] == motif
    assert torch.equal(make_motif_sequences(50, seed=3).sequences, data.sequences)
    assert 0.3 < data.labels.mean() < 0.7


def test_shipped_encoder_detects_the_motifs_and_its_token_maps_find_them():
    classifier = MotifClassifier(seed=None)
    classifier.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    assert WEIGHTS.stat().st_size < 200_000
    test = make_motif_sequences(300, seed=TEST_SEED)
    with torch.no_grad():
        accuracy = ((classifier(test.sequences) > 0) == test.labels.bool()).float().mean(0)
    assert (accuracy > 0.93).all(), accuracy
    encoder = default_sequence_encoder()
    lp = LayerPairAttribution(encoder, demo_sources(encoder)[2], "embed", method="InputXGradient")
    A = lp.attribute(test.sequences[:32])
    maps = aggregate(A, "abs", "channels", layout=lp.source.layout)[..., 1:]  # [N, K, L], without the CLS token
    on_motif = (test.positions[:32] > 0).float()
    has = on_motif.sum(1) > 0
    share = ((maps.sum(1) * on_motif).sum(1) / maps.sum((1, 2)))[has]
    assert share.mean() > on_motif.mean(1)[has].mean() + 0.05  # more than the motifs' share of positions


def test_run_demo_writes_a_report_with_every_source(tmp_path):
    report = run_demo(tmp_path, n_inputs=6)
    summary = json.loads(report.scores_json.read_text())
    assert [pair["n_units"] for pair in summary["layer_pairs"]] == [8, 8, 8]
    assert [pair["source_shape"] for pair in summary["layer_pairs"]] == [[16, LENGTH], [LENGTH + 1, 16],
                                                                        [LENGTH + 1, 16]]
    assert report.html.exists() and all(path.exists() for path in report.figures)


@pytest.mark.slow
def test_train_function_reproduces_the_shipped_weights():
    retrained = train_motif_transformer()
    shipped = MotifClassifier(seed=None)
    shipped.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    test = make_motif_sequences(500, seed=TEST_SEED)
    with torch.no_grad():
        agree = ((retrained(test.sequences) > 0) == (shipped(test.sequences) > 0)).float().mean()
    assert agree > 0.98
