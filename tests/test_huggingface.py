"""Hugging Face encoders built from a config (no download): a BERT-style text encoder with attention masks and a ViT.

References are independent of the engine: the sub-network is the Hugging Face model run with a plain forward hook
that replaces the source's output, differentiated per unit with ``torch.autograd.grad``, or Captum's own
``LayerIntegratedGradients`` per unit. Skipped when ``transformers`` is not installed.
"""
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients, Saliency

from captum_layerpair import LayerPairAttribution, aggregate

transformers = pytest.importorskip("transformers")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def modules_of_type(model, class_name):
    """Dotted names of the modules of a class, in definition order (names differ across transformers versions)."""
    return [name for name, module in model.named_modules() if type(module).__name__ == class_name]


def replaced_run(model, source, target, inputs, a, select_target, kwargs=None):
    """Run the Hugging Face model with ``source``'s output replaced by ``a`` (element 0 if it is a tuple), return
    ``select_target(target output)``: the hand-written sub-network."""
    captured = {}

    def replace(module, args, out):
        return (a, *out[1:]) if isinstance(out, tuple) else a

    handles = [source.register_forward_hook(replace),
               target.register_forward_hook(lambda m, i, o: captured.setdefault("T", o))]
    try:
        model(*inputs, **(kwargs or {}))
    finally:
        for handle in handles:
            handle.remove()
    T = captured["T"]
    return select_target(T[0] if isinstance(T, tuple) else T)


def output_of(model, module, inputs):
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        handle.remove()
    out = captured["out"]
    return (out[0] if isinstance(out, tuple) else out).detach()


def per_unit_gradients(g, a):
    a = a.detach().clone().requires_grad_()
    out = g(a)
    return torch.stack([torch.autograd.grad(out[:, k].sum(), a, retain_graph=True)[0] for k in range(out.shape[1])], 1)


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=5, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertModel(config).double().eval()


@pytest.fixture(scope="module")
def text():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0  # padding at the end of the second sequence
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_bert_embeddings_to_pooled_embedding_with_attention_mask(bert, text):
    ids, mask = text
    a = output_of(bert, bert.embeddings, (ids, mask))  # [N, L, D]
    g = lambda v: replaced_run(bert, bert.embeddings, bert.pooler, (ids, mask), v, lambda T: T)  # noqa: E731
    grads = per_unit_gradients(g, a)
    lp = LayerPairAttribution(bert, "embeddings", "pooler", method=InputXGradient, source_layout="channels_last")
    A = lp.attribute(ids, additional_forward_args=(mask,))
    assert A.shape == (3, 16, 9, 16)
    assert rel_err(A, grads * a[:, None]) < 1e-5
    # padded tokens are masked out of attention: they cannot move the pooled embedding
    maps = aggregate(A, "abs", "channels", layout=lp.source.layout)  # per-token maps [N, K, L]
    assert maps.shape == (3, 16, 9)
    assert maps[1, :, 6:].max() < 1e-12 and maps[2, :, 4:].max() < 1e-12
    assert maps[1, :, :6].min() > 0


def test_bert_cls_token_of_the_last_layer_and_layer_2_to_layer_4(bert, text):
    ids, mask = text
    layers = modules_of_type(bert, "BertLayer")
    assert len(layers) == 5
    cls = LayerPairAttribution(bert, "embeddings", layers[4], method=Saliency, target_reduction="first_token",
                               target_layout="channels_last")
    a = output_of(bert, bert.embeddings, (ids, mask))
    g = lambda v: replaced_run(bert, bert.embeddings, bert.get_submodule(layers[4]), (ids, mask), v,  # noqa: E731
                               lambda T: T[:, 0])
    assert rel_err(cls.attribute(ids, additional_forward_args=mask, abs=False), per_unit_gradients(g, a)) < 1e-5
    source, target = bert.get_submodule(layers[2]), bert.get_submodule(layers[4])
    a = output_of(bert, source, (ids, mask))
    g = lambda v: replaced_run(bert, source, target, (ids, mask), v, lambda T: T.sum(1))  # noqa: E731
    lp = LayerPairAttribution(bert, layers[2], layers[4], method=InputXGradient, source_layout="channels_last",
                              target_layout="channels_last")
    A = lp.attribute(ids, additional_forward_args=(mask,))
    assert A.shape == (3, 16, 9, 16)  # K = hidden size (summed over tokens)
    assert rel_err(A, per_unit_gradients(g, a) * a[:, None]) < 1e-5


def test_bert_integrated_gradients_from_a_padding_baseline_equals_captum_layer_ig_per_unit(bert, text):
    ids, mask = text
    baseline_ids = torch.zeros_like(ids)  # the [PAD] sequence, mapped to the embeddings by the engine
    lp = LayerPairAttribution(bert, "embeddings", "pooler", method=IntegratedGradients, source_layout="channels_last")
    A = lp.attribute(ids, additional_forward_args=(mask,), input_baselines=baseline_ids, n_steps=8)
    for k in (0, 7, 15):
        ref = LayerIntegratedGradients(lambda i, m, k=k: bert(i, attention_mask=m).pooler_output[:, k],
                                       bert.embeddings).attribute(ids, baselines=baseline_ids,
                                                                  additional_forward_args=(mask,), n_steps=8)
        assert rel_err(A[:, k], ref) < 1e-5


@pytest.fixture(scope="module")
def vit():
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    return transformers.ViTModel(config, add_pooling_layer=False).double().eval()


def test_vit_attention_tuple_output_to_cls_token(vit):
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    layers = modules_of_type(vit, "ViTLayer")
    attention = modules_of_type(vit, "ViTAttention")[0]  # returns a tuple (output, weights)
    source, target = vit.get_submodule(attention), vit.get_submodule(layers[1])
    a = output_of(vit, source, (x,))
    g = lambda v: replaced_run(vit, source, target, (x,), v, lambda T: T[:, 0])  # noqa: E731
    lp = LayerPairAttribution(vit, f"{attention}[0]", layers[1], method=InputXGradient,
                              target_reduction="first_token", source_layout="channels_last",
                              target_layout="channels_last")
    A = lp.attribute(x)
    assert A.shape == (2, 16, 5, 16)  # K = 16 features of the CLS token; source: CLS + 4 patches, 16 features
    assert rel_err(A, per_unit_gradients(g, a) * a[:, None]) < 1e-5
    assert aggregate(A, over="channels", layout="channels_last").shape == (2, 16, 5)
    assert aggregate(A, over="space", layout="channels_last").shape == (2, 16, 16)


def test_vit_patch_embedding_to_last_layer_mean(vit):
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    layers = modules_of_type(vit, "ViTLayer")
    source, target = vit.embeddings.patch_embeddings, vit.get_submodule(layers[-1])
    a = output_of(vit, source, (x,))  # [N, 4 patches, 16]
    g = lambda v: replaced_run(vit, source, target, (x,), v, lambda T: T.mean(1))  # noqa: E731
    A = LayerPairAttribution(vit, "embeddings.patch_embeddings", layers[-1], method=Saliency,
                             target_reduction="mean", target_layout="channels_last").attribute(x, abs=False)
    assert rel_err(A, per_unit_gradients(g, a)) < 1e-5


def test_a_model_output_is_selected_by_key_or_position_and_the_rest_passes_on_unchanged(text):
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.bert, self.head = transformers.BertModel(config), torch.nn.Linear(16, 3)

        def forward(self, ids, mask):
            out = self.bert(ids, attention_mask=mask)  # a ModelOutput
            return self.head(out.last_hidden_state[:, 0] + out["pooler_output"])

    model = Classifier().double().eval()
    ids, mask = text
    expected = torch.zeros(3, 3, 9, 16, dtype=torch.double)
    expected[:, :, 0] = model.head.weight  # g(a) = head(a[:, 0] + pooled), pooled kept from x
    for source in ("bert['last_hidden_state']", "bert[0]", ("bert", lambda out: out.last_hidden_state)):
        lp = LayerPairAttribution(model, source, "head", method=Saliency, source_layout="channels_last")
        assert rel_err(lp.attribute(ids, additional_forward_args=(mask,), abs=False), expected) < 1e-12
    pooled = LayerPairAttribution(model, "bert['pooler_output']", "head", method=Saliency)
    assert rel_err(pooled.attribute(ids, additional_forward_args=(mask,), abs=False),
                   model.head.weight.expand(3, 3, 16)) < 1e-12
