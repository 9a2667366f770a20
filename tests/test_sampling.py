"""Sampling: recorded log-probs equal a plain forward pass, empirical frequencies match π, EOS/padding."""
import pytest
import torch

from minigrpo.bandit.policies import MLPPolicy, TabularSoftmaxPolicy
from minigrpo.core.sampling import PrefixDecoding, sample_categorical, sample_group

EOS, PAD = 2, 9


class ToyLM(PrefixDecoding):
    """A 3-token autoregressive policy (EOS = 2) whose next-token distribution depends on the prompt,
    the previous token and the position: logits = base[x] + 1.5·onehot(prev) + [0, 0, 0.6·t]."""

    def __init__(self, eos_bias=0.0, dtype=torch.float64):
        self.base = torch.tensor([[0.0, 0.3, -1.0], [1.0, -0.5, -0.3], [-0.2, 0.1, -2.0]], dtype=dtype)
        self.eos_bias, self.dtype = eos_bias, dtype

    def _logits(self, prompts, prefix):
        P, G, t = prefix.shape
        logits = self.base[prompts][:, None, :].expand(P, G, 3).clone()            # (P, G, 3)
        if t > 0:
            prev = prefix[..., -1].clamp(0, 2)
            logits += 1.5 * torch.nn.functional.one_hot(prev, 3).to(self.dtype)
        logits[..., EOS] += 0.6 * t + self.eos_bias
        return logits

    def next_token_logp(self, prompts, prefix):
        return torch.log_softmax(self._logits(prompts, prefix), -1)

    def log_probs(self, prompts, completions):
        """The plain forward pass: score each given token with its own prefix, one position at a time."""
        P, G, T = completions.shape
        out = torch.empty(P, G, T, dtype=self.dtype)
        for t in range(T):
            out[..., t] = self.next_token_logp(prompts, completions[..., :t]).gather(-1, completions[..., t:t + 1])[..., 0]
        return out


def first_eos_mask(completions_raw_like):
    """Reference mask by explicit loops: True up to and including the first EOS."""
    P, G, T = completions_raw_like.shape
    mask = torch.zeros(P, G, T, dtype=torch.bool)
    for p in range(P):
        for g in range(G):
            for t in range(T):
                mask[p, g, t] = True
                if completions_raw_like[p, g, t] == EOS:
                    break
    return mask


# --- log-probs at sampling time = plain forward pass ---------------------------------------------------

def test_toy_lm_eos_mask_padding_and_logp():
    pol = ToyLM()
    prompts = torch.tensor([0, 1, 2])
    g = torch.Generator().manual_seed(0)
    roll = sample_group(pol, prompts, G=64, max_new_tokens=4, eos_id=EOS, pad_id=PAD, generator=g)
    y, logp, mask = roll.completions, roll.logp, roll.mask
    assert y.shape == logp.shape == mask.shape == (3, 64, 4) and roll.shape == (3, 64, 4)
    assert logp.dtype == torch.float64 and mask.dtype == torch.bool
    # the mask is "up to and including the first EOS", computed by loops on the returned tokens
    assert torch.equal(mask, first_eos_mask(y))
    # padding holds pad_id and logp 0; real tokens are never pad_id
    assert (y[~mask] == PAD).all() and (logp[~mask] == 0).all()
    assert (y[mask] != PAD).all() and (logp[mask] < 0).all()
    # every length 1..4 occurs, and completions with no EOS at all
    lengths = mask.sum(-1)
    assert set(lengths.unique().tolist()) == {1, 2, 3, 4}
    assert ((y == EOS).sum(-1) == 0).any()
    # the recorded log-probs equal a plain forward pass on the sampled completions (on real tokens)
    ref = pol.log_probs(prompts, y.clamp_max(2))
    torch.testing.assert_close(logp[mask], ref[mask], rtol=0, atol=1e-14)


def test_toy_lm_everyone_stops_at_once_is_padded_to_max_new_tokens():
    pol = ToyLM(eos_bias=60.0)                                  # EOS first with probability ≈ 1
    roll = sample_group(pol, torch.tensor([0, 1]), G=5, max_new_tokens=4, eos_id=EOS, pad_id=PAD,
                        generator=torch.Generator().manual_seed(1))
    assert roll.shape == (2, 5, 4)
    assert (roll.completions[..., 0] == EOS).all() and (roll.completions[..., 1:] == PAD).all()
    assert roll.mask[..., 0].all() and not roll.mask[..., 1:].any()
    assert (roll.logp[..., 1:] == 0).all()


def test_no_eos_id_means_full_mask():
    pol = ToyLM()
    roll = sample_group(pol, torch.tensor([0, 1]), G=6, max_new_tokens=3, generator=torch.Generator().manual_seed(2))
    assert roll.mask.all()
    torch.testing.assert_close(roll.logp, pol.log_probs(torch.tensor([0, 1]), roll.completions), rtol=0, atol=1e-14)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_logp_is_that_of_the_sampled_distribution(temperature):
    pol = ToyLM()
    prompts = torch.tensor([0, 2])
    roll = sample_group(pol, prompts, G=16, max_new_tokens=3, temperature=temperature,
                        generator=torch.Generator().manual_seed(3))
    P, G, T = roll.shape
    for t in range(T):
        dist = torch.log_softmax(pol._logits(prompts, roll.completions[..., :t]) / temperature, -1)
        ref = dist.gather(-1, roll.completions[..., t:t + 1])[..., 0]
        torch.testing.assert_close(roll.logp[..., t], ref, rtol=0, atol=1e-13)


def test_tabular_sampling_logp_equals_log_probs():
    g = torch.Generator().manual_seed(4)
    pol = TabularSoftmaxPolicy(3, 6, torch.randn(3, 6, generator=g))
    prompts = torch.tensor([2, 0, 2, 1])
    roll = sample_group(pol, prompts, G=8, max_new_tokens=3, generator=g)
    assert roll.shape == (4, 8, 3)
    assert roll.completions.min() >= 0 and roll.completions.max() < 6
    torch.testing.assert_close(roll.logp, pol.log_probs(prompts, roll.completions), rtol=0, atol=0)
    torch.testing.assert_close(roll.logp, torch.log_softmax(pol.theta.detach(), -1)[prompts]
                               .gather(1, roll.completions.reshape(4, 24)).view(4, 8, 3), rtol=0, atol=1e-6)


def test_mlp_sampling_logp_equals_log_probs():
    torch.manual_seed(0)
    pol = MLPPolicy(torch.eye(4), n_actions=5, hidden=16)
    prompts = torch.tensor([0, 3, 1])
    roll = sample_group(pol, prompts, G=10, generator=torch.Generator().manual_seed(5))
    assert roll.shape == (3, 10, 1)
    assert not roll.logp.requires_grad
    torch.testing.assert_close(roll.logp, pol.log_probs(prompts, roll.completions).detach(), rtol=0, atol=1e-6)


# --- the categorical draw --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_categorical_frequencies_match_pi(dtype):
    """Pearson χ² over 200k draws; df = 4, the 0.9995 quantile of χ²_4 is 20.0."""
    p = torch.tensor([0.05, 0.15, 0.2, 0.25, 0.35], dtype=dtype)
    n = 200_000
    y = sample_categorical(p.log().expand(n, -1), torch.Generator().manual_seed(6))
    assert y.shape == (n,) and y.dtype == torch.long
    counts = torch.bincount(y, minlength=5).double()
    expected = n * p.double()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 20.0, f"χ² = {chi2:.1f}, counts {counts.tolist()}"


def test_sample_categorical_never_draws_zero_probability_arms():
    p = torch.tensor([0.4, 0.0, 0.6, 0.0])
    y = sample_categorical(p.log().expand(100_000, -1), torch.Generator().manual_seed(7))
    assert set(y.unique().tolist()) == {0, 2}


def test_sample_categorical_per_row_distributions():
    """Different rows use their own distribution (one-hot rows are deterministic)."""
    logp = torch.log(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    y = sample_categorical(logp.repeat(1000, 1), torch.Generator().manual_seed(8))
    assert torch.equal(y.view(1000, 3), torch.tensor([0, 2, 1]).expand(1000, 3))


# --- reproducibility and validation -------------------------------------------------------------------------

def test_same_seed_same_samples():
    pol = ToyLM()
    prompts = torch.tensor([0, 1, 2])
    a = sample_group(pol, prompts, G=8, max_new_tokens=4, eos_id=EOS, generator=torch.Generator().manual_seed(9))
    b = sample_group(pol, prompts, G=8, max_new_tokens=4, eos_id=EOS, generator=torch.Generator().manual_seed(9))
    c = sample_group(pol, prompts, G=8, max_new_tokens=4, eos_id=EOS, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a.completions, b.completions) and torch.equal(a.logp, b.logp) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.completions, c.completions)


@pytest.mark.parametrize("kwargs,word", [(dict(G=0), "G="), (dict(G=-2), "G="),
                                         (dict(G=2, max_new_tokens=0), "max_new_tokens"),
                                         (dict(G=2, temperature=0.0), "temperature"),
                                         (dict(G=2, temperature=-1.0), "temperature"),
                                         (dict(G=2, temperature=float("nan")), "temperature")])
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        sample_group(ToyLM(), torch.tensor([0]), **kwargs)
