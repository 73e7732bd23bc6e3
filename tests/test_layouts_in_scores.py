"""Latent scores read a token source ([N, L, D], channels_last) along its tokens, not along its features."""
import torch
from captum.attr import InputXGradient

from captum_layerpair import LayerPairAttribution
from captum_layerpair.metrics import DisentanglementScore, disentanglement_score, informativeness_score
from captum_layerpair.sequence_models import GRUEncoder


def test_scores_of_a_channels_last_source_equal_the_scores_of_the_channels_first_permutation():
    torch.manual_seed(0)
    A = torch.rand(3, 4, 7, 5, dtype=torch.float64)  # [N, K, L tokens, D features]
    B = torch.rand(3, 4, 7, 5, dtype=torch.float64)
    first = A.transpose(2, 3)  # [N, K, D, L]: the same attribution, channels first
    torch.testing.assert_close(disentanglement_score(A, layout="channels_last"), disentanglement_score(first))
    torch.testing.assert_close(informativeness_score(A, B, layout="channels_last"),
                               informativeness_score(first, B.transpose(2, 3)))
    assert not torch.allclose(disentanglement_score(A, layout="channels_last"), disentanglement_score(A))


def test_score_class_uses_the_layer_pairs_source_layout():
    model = GRUEncoder(in_features=4, hidden=6, embed_dim=3).double().eval()
    lp = LayerPairAttribution(model, "proj", "embed", method=InputXGradient, source_layout="channels_last")
    x = torch.rand(3, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    A = lp.attribute(x)  # [N, K = 3, L = 9 steps, D = 6 features]
    assert A.shape == (3, 3, 9, 6)
    expected = disentanglement_score(A, layout="channels_last")
    torch.testing.assert_close(DisentanglementScore(lp).score(x).to(torch.float64), expected)
    assert not torch.allclose(expected, disentanglement_score(A))
