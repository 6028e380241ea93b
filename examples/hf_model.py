"""A Hugging Face transformers model switched to attnpat with one line, checked against eager attention.

A tiny random-weight Gemma-2 model (alternating sliding-window and global layers, logits soft-capped) is
built from a config object, so nothing is downloaded. `register()` makes "attnpat" an attention
implementation; `model.set_attn_implementation("attnpat")` is all the model needs. The script compares the
prefill logits of a left-padded batch and greedy generation with eager attention, then runs one training
step. It runs on the GPU when there is one (attnpat.kernel_device()), else under Triton's interpreter on the
CPU. Needs `pip install 'attnpat[hf]'`.
"""

import sys

import torch

import attnpat

try:
    import transformers
except ImportError:
    print("this example needs transformers: pip install 'attnpat[hf]'")
    sys.exit(0)

from attnpat.integrations.transformers import register

register()   # once per process: "attnpat" in AttentionInterface and AttentionMaskInterface

device = attnpat.kernel_device()
torch.manual_seed(0)
config = transformers.Gemma2Config(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, sliding_window=4, attn_logit_softcapping=20.0, query_pre_attn_scalar=16)
model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(device).eval()

ids = torch.randint(1, 64, (2, 8), device=device)
mask = torch.ones_like(ids)
mask[1, :3] = 0   # the second prompt is shorter: left padding

with torch.no_grad():
    eager_logits = model(ids, attention_mask=mask).logits
    eager_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)

model.set_attn_implementation("attnpat")   # the one line
with torch.no_grad():
    logits = model(ids, attention_mask=mask).logits
    tokens = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)

real = mask.bool()   # padded positions are not outputs of the model
print(f"prefill logits, largest difference from eager: {(logits - eager_logits).abs()[real].max().item():.2e}")
print(f"greedy generation identical to eager: {torch.equal(tokens, eager_tokens)}")
print("generated:", tokens[:, ids.shape[1]:].tolist())

model.train()
labels = ids.masked_fill(mask == 0, -100)
labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)   # the first real token follows padding
loss = model(ids, attention_mask=mask, labels=labels).loss
loss.backward()
print(f"training step: loss {loss.item():.4f}, gradient norm "
      f"{torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])).item():.4f}")
