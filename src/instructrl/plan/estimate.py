"""Bytes per GPU, part by part, of one stage on one engine with one set of levers.

The parts and how each is counted (B: micro-batch, T: tokens, h: hidden, I: MLP width, L: layers, V: vocab):

* weights: trained models in ``weight_dtype``; a LoRA model's frozen base in 16 bits (or 8 / 4 bits) plus
  fp32 adapters. FSDP / ZeRO-3 divide by the GPUs and gather two units (a layer or the embedding) at a time.
* gradients: one per trained parameter, in the weights' dtype (fp32 adapters); ZeRO-2 and up divide by the
  GPUs; DDP keeps a second copy in its all-reduce buckets.
* optimizer: AdamW's two fp32 moments, plus an fp32 master copy when weights are 16-bit (Rajbhandari et al.
  2020 §3.1: 16 bytes per parameter in all with mixed precision); ZeRO-2 and up divide; offload moves it to CPU.
* activations: kept for the backward (:func:`layer_activation_bytes`), plus the LM head's logits.
* rollout (PPO): the KV cache of a rollout chunk, or the scoring pass's logits, whichever is larger.
* frozen models: PPO's reference and reward model, DPO's reference; none for a LoRA reference (adapters off).
* overhead: a fixed allowance (``--overhead``).

Activations, the rollout and the optimizer step's temporaries are never held at once (sampling, then the
passes, then the step): the total counts the largest. Gradients are counted beside the activations: they are
(gradient accumulation, PPO-ptx's pretraining pass after the PPO backward); a step of a single micro-batch
peaks lower, by up to the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from instructrl.plan.arch import Arch
from instructrl.plan.config import PlanConfig

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# bytes per quantized weight: LLM.int8 one byte (Dettmers et al. 2022); NF4 half a byte plus the
# double-quantized block constants, 0.127 bits per parameter (Dettmers et al. 2023, QLoRA §3)
QUANT_BYTES = {"8bit": 1.0, "4bit": 0.5 + 0.127 / 8}
SHARDS_WEIGHTS = ("fsdp2", "zero3", "zero3-offload")
SHARDS_STATES = ("zero2", *SHARDS_WEIGHTS)  # gradients and optimizer states
TRANSIENT = ("activations", "rollout")  # never held at once with each other or with the optimizer step
PARTS = ("weights", "gradients", "optimizer", "activations", "rollout", "frozen", "overhead")
PART_NAMES = {
    "weights": "weights (trained models)",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "rollout": "rollout KV cache / scoring",
    "frozen": "frozen models",
    "overhead": "runtime overhead",
}


@dataclass(frozen=True)
class Model:
    """One model of a stage: its shapes, and whether it keeps the LM head (policy, reference) or a
    scalar head (reward, value: ``AutoModelForSequenceClassification``)."""

    role: str
    arch: Arch
    lm: bool

    @property
    def params(self) -> int:
        a = self.arch
        return a.lm_params if self.lm else a.backbone_params + a.scalar_head_params

    @property
    def head_params(self) -> int:
        """Parameters trained in full even with LoRA: the scalar head of a reward / value model."""
        return 0 if self.lm else self.arch.scalar_head_params


@dataclass
class Estimate:
    """Bytes per GPU by part, the models behind them, and the CPU memory an offload needs per GPU."""

    parts: dict[str, float]
    notes: dict[str, str]
    params: dict[str, int]  # role -> parameters the optimizer updates (frozen roles: the model's parameters)
    sizes: dict[str, int]  # role -> parameters a forward goes through (a LoRA reference: the policy's)
    cpu_bytes: float = 0.0
    step_bytes: float = 0.0  # the optimizer step's temporaries
    detail: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Peak bytes per GPU: activations, the rollout and the optimizer step's temporaries come one at a time."""
        p = self.parts
        held = sum(v for k, v in p.items() if k not in TRANSIENT)
        return held + max(p["activations"], p["rollout"], self.step_bytes)


# ---------------------------------------------------------------------------- activations
def layer_activation_bytes(
    arch: Arch,
    b: int,
    s: int,
    act_bytes: float,
    stream_bytes: float,
    *,
    dropout: bool,
    flash: bool = True,
    trained: frozenset[str] | None = None,
    adapter_input_bytes: float | None = None,
    lora_dropout: bool = False,
    cpu: bool = False,
) -> float:
    """Bytes one decoder layer keeps for its backward, for ``b`` sequences of ``s`` tokens.

    Korthikanti et al. 2022 ("Reducing activation recomputation", §4.1) count 34·sbh + 5·a·s²·b bytes for a
    GPT layer in 16 bits; written out per tensor here so that it holds for grouped-query attention, a gated
    MLP and fp32 residual streams (autocast over fp32 weights), and reduces to theirs for a GPT layer.
    Checked tensor by tensor with ``torch.autograd.graph.saved_tensors_hooks`` (benchmarks/scale).

    ``trained``: the names of the linears whose weights get a gradient (LoRA: its targets, whose adapters read
    the same input); None = all. A frozen linear keeps no input: its backward needs only its weight.
    ``adapter_input_bytes``: LoRA over a 16-bit base without autocast: peft casts each adapted linear's input to
    the adapters' fp32 and the adapter keeps that copy, so each adapted linear keeps its own input in this many
    bytes (measured with saved-tensor hooks: benchmarks/scale/levers.md).
    ``lora_dropout``: each adapter reads its own dropped-out copy of the input (peft's dropout sits before
    ``lora_A``), and keeps it.
    ``cpu``: what a dropout keeps for its backward besides its output. CUDA's fused dropout keeps a one-byte mask;
    the CPU's keeps its scaled noise tensor in the input's dtype (``at::dropout``'s unfused path).
    """
    h, kv, hd, nh, inter = arch.hidden_size, arch.num_kv_heads, arch.head_dim, arch.num_heads, arch.intermediate_size
    tokens = b * s
    # the layer's linears in order: the attention's input projection(s), its output, the MLP's input(s), its output
    n_in = arch.attention_input_linears
    linears = arch.linears

    def keeps(ms) -> int:  # how many of these linears keep their input for a weight gradient
        return sum(trained is None or m.name in trained for m in ms)

    attn_in, mlp_in = keeps(linears[:n_in]), keeps(linears[n_in + 1 : -1])
    attn_out_kept, mlp_out_kept = keeps(linears[n_in : n_in + 1]) > 0, keeps(linears[-1:]) > 0
    # the two norms' inputs (the residual stream); an RMSNorm written in Python (Llama's family) also keeps
    # its normalized output, for the weight's gradient (a fused LayerNorm keeps only per-row statistics)
    # (LoRA: the norms' weights are frozen, so no normalized output is kept for them)
    total = (4 if arch.python_rms_norm and trained is None else 2) * tokens * h * stream_bytes
    # autocast over fp32 weights casts the norm's output once per linear that reads it (q, k, v; gate, up);
    # in one dtype the linears share it
    casts = act_bytes != stream_bytes
    # one copy per adapted linear: peft's cast to the adapters' dtype, or its dropout's output
    copies = trained is not None and (adapter_input_bytes is not None or lora_dropout)
    in_bytes = adapter_input_bytes if adapter_input_bytes is not None and trained is not None else act_bytes

    def mask(element_bytes: float) -> float:  # what a dropout over elements of this size keeps beside its output
        return element_bytes if cpu else 1

    total += (attn_in if casts or copies else min(attn_in, 1)) * tokens * h * in_bytes  # the q/k/v input(s)
    total += tokens * (nh + 2 * kv) * hd * act_bytes  # Q, K, V
    if flash:  # the attention output: SDPA's backward reads it
        total += tokens * nh * hd * act_bytes
    # the output projection's input, for its weight's gradient: its own copy under an adapter that casts it (to
    # its fp32, then autocast back to 16 bits) or drops it out, else the attention output SDPA keeps anyway
    if attn_out_kept and (copies or (casts and trained is not None) or not flash):
        total += tokens * nh * hd * in_bytes
    if flash:  # SDPA / FlashAttention keep one fp32 log-sum-exp per row instead of the s x s scores
        total += tokens * nh * 4
    else:  # Korthikanti §4.1: softmax output (2 bytes) + dropout mask (1) + dropout output (2) = 5·a·s²·b
        total += 5 * b * nh * s * s * act_bytes / 2
    total += (mlp_in if casts or copies else min(mlp_in, 1)) * tokens * h * in_bytes  # the MLP's input(s)
    # gated (SwiGLU): gate and up outputs, act(gate), act(gate)*up = the down projection's input; else fc
    # output (the activation's input) and the activation's output (Korthikanti: 8sbh + 8sbh at I = 4h); the down
    # projection's input only when it is trained
    total += (3 if arch.gated_mlp else 1) * tokens * inter * act_bytes + mlp_out_kept * tokens * inter * in_bytes
    if dropout:  # the masks of the attention and MLP residual dropouts (Korthikanti: sbh each, one byte)
        total += 2 * tokens * h * mask(act_bytes)
    if lora_dropout and trained is not None:  # each adapter's dropout mask, over its input cast to the adapters' fp32
        adapted_inputs = (attn_in + mlp_in) * h + attn_out_kept * nh * hd + mlp_out_kept * inter
        total += adapted_inputs * tokens * mask(4)
    return total


def logits_bytes(arch: Arch, b: int, positions: int, act_bytes: float) -> float:
    """The LM head's (b, positions, V) output in the compute dtype, the fp32 log-softmax the loss keeps, and
    its fp32 gradient in the backward."""
    return b * positions * arch.vocab_size * (act_bytes + 4 + 4)


def activation_bytes(
    model: Model,
    b: int,
    s: int,
    act_bytes: float,
    stream_bytes: float,
    *,
    checkpointing: bool,
    dropout: bool,
    logit_positions: int | None = None,
    weight_casts: bool = False,
    trained: frozenset[str] | None = None,
    adapter_input_bytes: float | None = None,
    lora_dropout: bool = False,
    cpu: bool = False,
) -> float:
    """A model's activations for one forward/backward of ``b`` sequences of ``s`` tokens. Without
    checkpointing every layer keeps its tensors; with it (Korthikanti §5: 2·sbh·L in 16 bits) each layer
    keeps its input and one layer at a time is recomputed in full. ``trained``: a LoRA model's targets (see
    :func:`layer_activation_bytes`); its LM head is frozen too, a scalar head trained.

    ``weight_casts``: autocast over unsharded fp32 weights keeps the 16-bit copy of every linear's weight
    that its matmul used, for the backward (2 bytes per weight; per layer recomputed with checkpointing)."""
    arch = model.arch
    layer = layer_activation_bytes(
        arch, b, s, act_bytes, stream_bytes, dropout=dropout, trained=trained, adapter_input_bytes=adapter_input_bytes,
        lora_dropout=lora_dropout, cpu=cpu,
    )  # fmt: skip
    if checkpointing:
        stored = arch.num_layers * b * s * arch.hidden_size * stream_bytes + layer
    else:
        stored = arch.num_layers * layer
    # the final norm's input (and a Python RMSNorm's output), the head's input (unless a frozen LM head)
    final_norm = 2 if arch.python_rms_norm and trained is None else 1
    head_input = 0 if model.lm and trained is not None else act_bytes
    stored += b * s * arch.hidden_size * (final_norm * stream_bytes + head_input)
    if model.lm:
        stored += logits_bytes(arch, b, s if logit_positions is None else logit_positions, act_bytes)
    if weight_casts:
        layer_weights = sum(m.d_in * m.d_out for m in arch.linears)
        head = arch.vocab_size if model.lm else 1
        stored += 2 * ((1 if checkpointing else arch.num_layers) * layer_weights + head * arch.scalar_head_params)
    return stored


def kv_cache_bytes(arch: Arch, b: int, tokens: int, act_bytes: float) -> float:
    """K and V of every layer for ``b`` sequences of ``tokens``: 2 · L · kv_heads · head_dim · tokens · b
    elements (Pope et al. 2022, "Efficiently scaling Transformer inference", §2; grouped-query attention
    keeps kv_heads of them, Ainslie et al. 2023)."""
    return 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * tokens * b * act_bytes


# ---------------------------------------------------------------------------- the stage's models
def stage_models(cfg: PlanConfig, policy: Arch, reward: Arch, value: Arch) -> tuple[list[Model], list[Model]]:
    """(trained, frozen) models of the stage. With LoRA the reference is the policy with its adapters
    disabled (no copy); a value model sharing the policy's base is the policy's shapes plus a head."""
    lora = cfg.lora_r > 0
    if cfg.stage == "sft":
        return [Model("policy", policy, True)], []
    if cfg.stage == "rm":
        return [Model("reward", reward, False)], []
    reference = [] if lora else [Model("reference", policy, True)]
    if cfg.stage == "dpo":
        return [Model("policy", policy, True)], reference
    frozen = [*reference, Model("reward", reward, False)]
    if cfg.advantage != "gae":  # critic-free estimators (GRPO, RLOO, REINFORCE++) train no value model
        return [Model("policy", policy, True)], frozen
    return [Model("policy", policy, True), Model("value", policy if cfg.value_shares_base else value, False)], frozen


def frozen_dtype_of(cfg: PlanConfig, model: Model, weight_dtype: str) -> str:
    """A frozen model's dtype: ``cfg.frozen_dtype``; 'weights': the trained weights' dtype; 'auto', what instructrl
    ppo/dpo load by default: the reference as the policy (``weight_dtype``), the reward model as saved."""
    if cfg.frozen_dtype == "auto":
        return model.arch.saved_dtype if model.role == "reward" else weight_dtype
    return weight_dtype if cfg.frozen_dtype == "weights" else cfg.frozen_dtype


ADAMW = ("fused", "foreach")


def optimizer_step_bytes(engine: str, shard_params: float, adamw: str = "fused") -> float:
    """Bytes the optimizer step allocates beyond the states, for ``shard_params`` trained parameters per GPU.

    ``fused``, what every stage builds on a CPU and on a CUDA GPU (``training/optim.py``): torch's fused AdamW updates
    weights and moments in place, one pass per tensor on a CPU, a few multi-tensor kernels on a GPU, and allocates
    nothing (measured on a CPU: a 50M-element tensor's first step holds its two moments, 384 MiB, where the
    per-tensor implementation held two more fp32 temporaries, 767 MiB). The stages hand the same AdamW to DeepSpeed
    ZeRO-2/3, which steps it on its flat fp32 partition after copying the partition's gradients into one flat fp32
    tensor (+4 bytes per parameter). An offloaded optimizer is DeepSpeed's CPU Adam, stepping in CPU memory.

    ``foreach``, torch's default AdamW on a GPU: one more fp32 temporary per parameter (+4 bytes, measured on an
    H200, benchmarks/scale/results.md). Kept to compare plans with runs made that way."""
    if adamw not in ADAMW:
        raise ValueError(f"adamw must be one of {', '.join(ADAMW)}, not {adamw!r}")
    if engine == "zero3-offload":
        return 0.0
    per_param = (4 if engine in ("zero2", "zero3") else 0) + (4 if adamw == "foreach" else 0)
    return per_param * shard_params


def estimate(
    cfg: PlanConfig, policy: Arch, reward: Arch | None = None, value: Arch | None = None, adamw: str = "fused"
) -> Estimate:
    """The plan of ``cfg``; ``adamw`` is the optimizer implementation whose step is counted (:func:`optimizer_step_bytes`:
    ``fused``, what instructrl runs, or ``foreach``)."""
    reward = reward or policy
    value = value or reward
    world = cfg.world
    weight_dtype = cfg.weight_dtype
    if cfg.engine.startswith("zero") and cfg.mixed_precision != "no":
        weight_dtype = cfg.mixed_precision  # DeepSpeed's bf16/fp16 modes: 16-bit weights over an fp32 master copy
    wb = DTYPE_BYTES[weight_dtype]
    act_bytes = 2 if cfg.mixed_precision != "no" or wb == 2 else 4
    stream_bytes = wb if cfg.lora_r == 0 or cfg.quantize_base == "none" else 2
    shard_w = world if cfg.engine in SHARDS_WEIGHTS else 1
    shard_s = world if cfg.engine in SHARDS_STATES else 1
    trained, frozen = stage_models(cfg, policy, reward, value)

    # an fp32 master copy of the trained weights: in 16 bits; DeepSpeed keeps its own fp32 copy of the partition in
    # fp32 runs too (its optimizer steps a flat clone of the weights)
    master = wb < 4 or cfg.engine.startswith("zero")
    weights = grads = optim = 0.0
    notes: dict[str, list[str]] = {k: [] for k in PARTS}
    params: dict[str, int] = {}
    units: list[int] = []  # each trained model's largest shard unit (a layer, the embedding or the head)
    for m in trained:
        if cfg.lora_r:
            shared = m.role == "value" and cfg.value_shares_base
            updated = m.arch.lora_params(cfg.lora_r, cfg.lora_targets) + m.head_params
            base = 0 if shared else m.params - m.head_params
            if cfg.quantize_base == "none":
                base_bytes = base * wb
            else:
                q = m.arch.quantizable_params if base else 0
                base_bytes = q * QUANT_BYTES[cfg.quantize_base] + (base - q) * 2
            weights += base_bytes + updated * 4  # adapters and heads in fp32 (peft keeps adapters in fp32)
            grads += updated * 4
            optim += updated * 8
            base_note = "shares the policy's base" if shared else f"{base / 1e9:.2f}B base"
            notes["weights"].append(f"{m.role} {base_note} + {updated / 1e6:.1f}M LoRA/head")
        else:
            updated = m.params
            weights += updated * wb
            grads += updated * wb
            optim += updated * (8 + (4 if master else 0))  # 2 fp32 moments (+ fp32 master copy)
            notes["weights"].append(f"{m.role} {updated / 1e9:.2f}B {weight_dtype}")
        params[m.role] = updated
        a = m.arch
        units.append(max(a.layer_params, a.embedding_params, a.lm_head_params))
    weights /= shard_w
    largest_unit = max(units)
    if shard_w > 1:
        # FSDP / ZeRO-3 gather a unit while prefetching the next (16-bit under autocast); FSDP2 also keeps each model's
        # root unit (embedding and head) gathered from its forward to its backward, one per model trained together
        gathered_units = largest_unit + (sum(units) if cfg.engine == "fsdp2" else largest_unit)
        gathered = gathered_units * (2 if act_bytes == 2 else wb)
        weights += gathered
        notes["weights"].append(f"sharded over {world} GPUs + {gathered / GIB:.2f} GiB of gathered units")
    grads /= shard_s
    optim /= shard_s
    if cfg.engine == "ddp" and world > 1:
        grads *= 2  # DDP's all-reduce buckets hold a second copy (gradient_as_bucket_view=False, its default)
        notes["gradients"].append("x2: DDP's all-reduce buckets")
    elif shard_s > 1:
        notes["gradients"].append(f"sharded over {world} GPUs")
    if cfg.engine.startswith("zero"):  # each engine's gradient bucket, hidden² elements (training/engines.py)
        bucket = sum(min(m.arch.hidden_size**2, params[m.role]) for m in trained) * (4 if cfg.lora_r else wb)
        grads += bucket
        notes["gradients"].append(f"+{bucket / GIB:.2f} GiB of DeepSpeed's gradient buckets")
    step = optimizer_step_bytes(cfg.engine, sum(params[m.role] for m in trained) / shard_s, adamw)
    cpu = 0.0
    if cfg.engine == "zero3-offload":
        cpu, optim = optim, 0.0
        notes["optimizer"].append(f"in CPU memory: {cpu * cfg.gpus / GIB:.1f} GiB per node")
    elif shard_s > 1:
        notes["optimizer"].append(f"sharded over {world} GPUs")
    if step:
        what = "flat fp32 gradients" if cfg.engine.startswith("zero") and adamw == "fused" else "temporaries"
        notes["optimizer"].append(f"+{step / GIB:.1f} GiB of {what} during the step")
    notes["optimizer"].insert(0, "AdamW: 2 fp32 moments" + (" + fp32 master" if master and not cfg.lora_r else ""))

    frozen_bytes = 0.0
    placement = cfg.frozen_placement
    if placement == "auto":
        placement = "sharded" if shard_w > 1 else "replicated"
    for m in frozen:
        dtype = frozen_dtype_of(cfg, m, weight_dtype)
        fb = DTYPE_BYTES[dtype]
        size = m.params * fb
        if placement == "cpu":
            cpu += size
            size = 2 * max(m.arch.layer_params, m.arch.embedding_params) * fb  # the units moved in
        elif placement == "sharded":
            size /= world
        frozen_bytes += size
        params[m.role] = m.params
        notes["frozen"].append(f"{m.role} {m.params / 1e9:.2f}B {dtype}")
    if frozen:
        notes["frozen"].append(placement)

    # activations of one micro-batch (PPO: one minibatch share, policy and value backwarded together)
    T = cfg.prompt_length + cfg.response_length
    ck = cfg.gradient_checkpointing
    # autocast over fp32 weights that are not sharded (a sharded unit is gathered in 16 bits already)
    casts = act_bytes < stream_bytes and shard_w == 1
    detail: dict[str, float] = {}
    mb = micro_batch(cfg)

    # LoRA over a 16-bit or quantized base without autocast: each adapted linear's input kept as an fp32 copy
    adapter_in = 4.0 if cfg.lora_r and cfg.mixed_precision == "no" and stream_bytes == 2 else None

    def adapted(m: Model) -> frozenset[str] | None:  # LoRA: only the adapted linears keep their inputs
        return frozenset(x.name for x in m.arch.lora_targets(cfg.lora_targets)) if cfg.lora_r else None

    if cfg.stage == "ppo":
        pol = trained[0]
        train = sum(
            activation_bytes(
                m,
                mb,
                T,
                act_bytes,
                stream_bytes,
                checkpointing=ck,
                dropout=False,
                logit_positions=cfg.response_length + 1,
                weight_casts=casts,
                trained=adapted(m),
                adapter_input_bytes=adapter_in,
            )
            for m in trained
        )
        ptx = 0.0
        if cfg.ptx_micro_batch_size:
            ptx = activation_bytes(
                pol,
                cfg.ptx_micro_batch_size,
                cfg.ptx_length,
                act_bytes,
                stream_bytes,
                checkpointing=ck,
                dropout=False,
                weight_casts=casts,
                trained=adapted(pol),
                adapter_input_bytes=adapter_in,
            )
        activations = max(train, ptx)
        detail.update(ppo_activations=train, ptx_activations=ptx)
        notes["activations"].append(
            f"{' + '.join(m.role for m in trained)} on {mb} x {T} tokens; ptx {cfg.ptx_micro_batch_size} x "
            f"{cfg.ptx_length}: the larger"
        )
        chunk = rollout_batch(cfg)
        kv = kv_cache_bytes(policy, chunk, T, act_bytes)
        scoring = (
            logits_bytes(policy, chunk, cfg.response_length + 1, act_bytes)
            - chunk * (cfg.response_length + 1) * policy.vocab_size * 4
        )  # no gradient in the scoring pass
        rollout = max(kv, scoring)
        detail.update(kv_cache=kv, scoring_logits=scoring)
        notes["rollout"].append(f"{chunk} episodes x {T} tokens: KV {kv / GIB:.1f}, logits {scoring / GIB:.1f} GiB")
        if shard_w > 1 and cfg.rollout_gather == "whole":
            # instructrl ppo samples on the policy's weights gathered once per rollout (training.engines.gathered),
            # in the compute dtype (FSDP2's mixed-precision policy, DeepSpeed's 16-bit weights), beside its shard
            gathered = (params["policy"] if not cfg.lora_r else pol.params) * (2 if act_bytes == 2 else wb)
            rollout += gathered
            detail.update(gathered_policy=gathered)
            notes["rollout"].append(f"+ the policy gathered for sampling, {gathered / GIB:.1f} GiB")
    else:
        model = trained[0]
        activations = activation_bytes(
            model,
            mb,
            T,
            act_bytes,
            stream_bytes,
            checkpointing=ck,
            dropout=cfg.stage == "sft",
            weight_casts=casts,
            trained=adapted(model),
            adapter_input_bytes=adapter_in,
            lora_dropout=bool(cfg.lora_r) and cfg.effective_lora_dropout > 0,
            cpu=cfg.device == "cpu",
        )  # instructrl sft: residual dropout 0.2 (InstructGPT App. C.1)
        rollout = 0.0
        notes["activations"].append(f"{mb} x {T} tokens" + (", checkpointed" if ck else ""))
    if ck and cfg.stage == "ppo":
        notes["activations"].append("checkpointed")
    # the backward reduces each unit's gradient as it comes: under FSDP2 the unit's whole gradient and the flat
    # reduce-scatter input copied from it, for each model backwarded together (PPO's policy and value model), under
    # DeepSpeed the parameter's whole gradient beside its bucket (counted with the gradients); the largest unit
    # (often the embedding) sets the moment
    copies = {"fsdp2": 2, "zero2": 1, "zero3": 1, "zero3-offload": 1}.get(cfg.engine, 0)
    if copies and world > 1 and not cfg.lora_r:
        reducing = sum(units) if cfg.engine == "fsdp2" else largest_unit
        reduce = copies * reducing * (2 if act_bytes == 2 and shard_w > 1 else wb)
        activations += reduce
        detail["gradient_reduce"] = reduce
        notes["activations"].append(f"+{reduce / GIB:.2f} GiB: the largest unit's gradient being reduced")

    parts = {
        "weights": weights,
        "gradients": grads,
        "optimizer": optim,
        "activations": activations,
        "rollout": rollout,
        "frozen": frozen_bytes,
        "overhead": cfg.effective_overhead * GIB,
    }
    return Estimate(
        parts=parts,
        notes={k: "; ".join(v) for k, v in notes.items() if v},
        params=params,
        sizes={m.role: m.params for m in (*trained, *frozen)}
        | ({"reference": trained[0].params} if cfg.lora_r and cfg.stage in ("ppo", "dpo") else {}),
        cpu_bytes=cpu,
        step_bytes=step,
        detail=detail | {"optimizer_step": step},
    )


def micro_batch(cfg: PlanConfig) -> int:
    if cfg.micro_batch_size:
        return cfg.micro_batch_size
    return max(1, math.ceil(cfg.mini_batch_size / cfg.world)) if cfg.stage == "ppo" else 8


def rollout_batch(cfg: PlanConfig) -> int:
    return cfg.rollout_batch_size or max(1, math.ceil(cfg.batch_size / cfg.world))


# ---------------------------------------------------------------------------- time
def ppo_episodes_per_second(cfg: PlanConfig, est: Estimate, policy: Arch) -> float:
    """PPO-ptx episodes per second of one iteration: the passes that process whole sequences at an assumed
    FLOPs utilization, plus sampling token by token, which is bound by memory and links.

    Per episode of T = prompt + response tokens (Kaplan et al. 2020: a forward costs 2·N FLOPs per token, a
    forward and backward 6·N): the prompt's prefill (2·N·P); scoring with policy, reference, reward and value
    (2·N·T each); training policy and value (6·N·T; 8·N·T with checkpointing's second forward; LoRA skips the
    weight gradients: 2·N·T less); ``ptx_per_episode`` pretraining windows through the policy, trained alike.
    Sampling takes ``response_length`` steps per rollout chunk; a step costs the larger of its FLOPs
    (2·N per sequence) and reading the 16-bit weights and the KV cache from GPU memory, plus, for a sharded
    policy, gathering its weights over NVLink, or the network across nodes (Pope et al. 2022: decoding
    small batches is memory-bound): at every step, or once per rollout when fsdp2 or zero3 gathers it whole.
    """
    n = est.sizes
    T = cfg.prompt_length + cfg.response_length
    per_token = 6 + (2 if cfg.gradient_checkpointing else 0) - (2 if cfg.lora_r else 0)
    passes = 2 * n["policy"] * cfg.prompt_length
    value = n.get("value", 0)  # none with a critic-free estimator
    passes += 2 * T * (n["policy"] + n["reference"] + n["reward"] + value)
    passes += per_token * T * (n["policy"] + value)
    if cfg.ptx_micro_batch_size:
        passes += per_token * cfg.ptx_length * n["policy"] * cfg.ptx_per_episode
    flops = cfg.gpu_tflops * 1e12 * cfg.mfu  # per GPU
    passes_seconds = cfg.batch_size * passes / (cfg.world * flops)
    chunk = rollout_batch(cfg)
    local = math.ceil(cfg.batch_size / cfg.world)
    weight_bytes = n["policy"] * 2
    mean_kv = kv_cache_bytes(policy, chunk, cfg.prompt_length + cfg.response_length // 2, 2)  # the cache grows
    step = max(2 * n["policy"] * chunk / flops, (weight_bytes + mean_kv) / (cfg.hbm_bandwidth * 1e9))
    gather = 0.0  # seconds to gather the sharded policy's weights once
    if cfg.engine in SHARDS_WEIGHTS and cfg.world > 1:
        link = cfg.network_bandwidth if cfg.nodes > 1 else cfg.link_bandwidth
        gather = weight_bytes * (cfg.world - 1) / cfg.world / (link * 1e9)
    whole = cfg.engine in SHARDS_WEIGHTS and cfg.rollout_gather == "whole"  # instructrl ppo: once per rollout
    steps = math.ceil(local / chunk) * cfg.response_length
    sampling_seconds = steps * step + (gather if whole else steps * gather)
    return cfg.batch_size / (passes_seconds + sampling_seconds)
