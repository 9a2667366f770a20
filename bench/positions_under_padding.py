"""How far log π moves when a left-padded prompt is scored without position ids.

    python bench/positions_under_padding.py

The sampler (minigrpo's, and transformers' ``generate``) numbers positions from the first real
token. A scoring pass that passes only ``input_ids`` and ``attention_mask`` (as TRL 1.16's
GRPOTrainer does) lets GPT-2 number them 0…S−1, padding included, so a prompt padded by k tokens
is scored k positions later than it was sampled. GPT-2's positions are learned and absolute, so the
log-probs differ. This prints, per prompt, the largest |Δ log π| over the sampled completion tokens
of the shipped addition anchor: minigrpo's scoring pass against the sampler's log-probs, and the
no-position-ids pass against them.
"""
from __future__ import annotations

import torch

from minigrpo.lm.policy import CausalLMPolicy, prompt_mask
from minigrpo.lm.models import load_causal_lm
from minigrpo.core.sampling import sample_group
from minigrpo.lm.sft import anchor_dir
from minigrpo.lm.tokens import encode_prompts

from args import Parser

PROMPTS = ["12+34=", "3+45=", "7+8="]          # left padding 0, 1 and 2 in one batch


def main() -> None:
    Parser(description=__doc__.splitlines()[0]).parse_args()        # no flags: --help, or one line for any other
    model, tok = load_causal_lm(anchor_dir("addition", {}))
    policy = CausalLMPolicy(model, tok.pad_token_id)
    prompts = encode_prompts(tok, PROMPTS)
    ro = sample_group(policy, prompts, 8, max_new_tokens=4, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                      generator=torch.Generator().manual_seed(0))
    P, G, T = ro.shape
    with torch.no_grad():
        ours = policy.log_probs(prompts, ro.completions)
        ids = torch.cat([prompts.repeat_interleave(G, 0), ro.completions.reshape(P * G, T)], 1)
        attn = torch.cat([prompt_mask(prompts, tok.pad_token_id).repeat_interleave(G, 0),
                          ro.mask.reshape(P * G, T)], 1).long()
        logits = model(input_ids=ids, attention_mask=attn).logits[:, -T - 1:-1]         # no position_ids
        plain = torch.log_softmax(logits.float(), -1).gather(-1, ro.completions.reshape(P * G, T, 1))[..., 0]
    plain = plain.view(P, G, T)
    print("| prompt | left padding | max abs(Δ log π), minigrpo vs sampler | max abs(Δ log π), no position ids vs sampler |")
    print("|---|---|---|---|")
    for p, text in enumerate(PROMPTS):
        m = ro.mask[p]
        a = ((ours[p] - ro.logp[p]).abs() * m).max().item()
        b = ((plain[p] - ro.logp[p]).abs() * m).max().item()
        print(f"| `{text}` | {int((~prompt_mask(prompts, tok.pad_token_id)[p]).sum())} | {a:.1e} | {b:.2f} |")


if __name__ == "__main__":
    main()
