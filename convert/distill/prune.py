"""Importance on calibration text, and the pruned student built from it.

Depth: block influence BI_l = 1 - mean_t cos(h_in[t], h_out[t]) of decoder layer l over the
calibration tokens (ShortGPT; Minitron's depth metric). The layers with the lowest BI change the
hidden state least; they are dropped. The embedding, the final norm and the head are always kept.

Width (Minitron's activation-based importance):
  MLP channel c:  mean_t |act(gate(x))[c] * up(x)[c]|, the input of down_proj;
  KV group g:     sum over the group's query heads of mean_t ||attn_out[head]||_2, the input of
                  o_proj; a group is kept or dropped with its query heads, so the GQA ratio stays.
Each layer keeps its own most important channels / groups (in their original order); every layer
keeps the same number, so the student is an ordinary checkpoint of the teacher's architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convert.errors import ConvertError

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass
class Importance:
    block_influence: list[float]
    mlp: list  # per layer: a tensor [intermediate]
    heads: list  # per layer: a tensor [num_attention_heads]
    tokens: int = 0


@dataclass
class Plan:
    keep_layers: list[int]
    intermediate: list[list[int]] | None = None  # per kept layer: channel indices (None: all)
    kv_groups: list[list[int]] | None = None  # per kept layer: KV group indices (None: all)
    config: dict = field(default_factory=dict)  # the student's config.json


def check_architecture(config: dict, where: str) -> None:
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED:
        raise ConvertError(
            f"{where}: architecture {arch} cannot be distilled yet; supported: {', '.join(SUPPORTED)}"
        )


def _layers(model):
    return model.model.layers


def measure(model, batches, *, progress=None) -> Importance:
    """Block influence, MLP channel and attention head importance over ``batches`` (LongTensors
    [B, L] on the model's device), in float32, without gradients."""
    import torch

    layers = _layers(model)
    n = len(layers)
    cfg = model.config
    heads = cfg.num_attention_heads
    cos_sum = torch.zeros(n, dtype=torch.float64)
    mlp = [None] * n
    att = [torch.zeros(heads, dtype=torch.float64) for _ in range(n)]
    count = 0
    hooks = []

    def layer_hook(i):
        def hook(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            c = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            cos_sum[i] += c.double().sum().cpu()

        return hook

    def mlp_hook(i):
        def hook(module, args):
            a = args[0].detach().float().abs().sum(dim=(0, 1)).double().cpu()
            mlp[i] = a if mlp[i] is None else mlp[i] + a

        return hook

    def att_hook(i):
        def hook(module, args):
            x = args[0].detach().float()
            x = x.view(*x.shape[:-1], heads, x.shape[-1] // heads)
            att[i] += x.norm(dim=-1).sum(dim=(0, 1)).double().cpu()

        return hook

    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(layer_hook(i), with_kwargs=True))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(mlp_hook(i)))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(att_hook(i)))
    try:
        with torch.no_grad():
            for b, batch in enumerate(batches):
                model(batch, use_cache=False)
                count += batch.numel()
                if progress:
                    progress("importance", b + 1, len(batches), {})
    finally:
        for h in hooks:
            h.remove()
    bi = (1.0 - cos_sum / max(count, 1)).tolist()
    return Importance(
        block_influence=bi,
        mlp=[m / count for m in mlp],
        heads=[a / count for a in att],
        tokens=count,
    )


def layers_to_keep(config: dict, prune, layers: int | None, bi: list[float] | None) -> list[int]:
    """The indices of the decoder layers the student keeps (sorted)."""
    n = int(config["num_hidden_layers"])
    if layers is not None:
        want = layers
        what = f"--layers {layers}"
    elif prune.keep is not None:
        keep = sorted(set(int(i) for i in prune.keep))
        if not keep or keep[0] < 0 or keep[-1] >= n:
            raise ConvertError(
                f"recipe prune.keep = {prune.keep}: the teacher has layers 0..{n - 1}; list indices in that range"
            )
        return keep
    elif prune.drop is not None:
        want = n - int(prune.drop)
        what = f"recipe prune.drop = {prune.drop}"
    elif prune.layers is not None:
        want = int(prune.layers)
        what = f"recipe prune.layers = {prune.layers}"
    else:
        return list(range(n))
    if not 1 <= want <= n:
        raise ConvertError(
            f"{what} leaves {want} of the teacher's {n} layers; keep between 1 and {n}"
        )
    if want == n:
        return list(range(n))
    order = sorted(range(n), key=lambda i: (bi[i], i))  # lowest influence first, ties by index
    return sorted(order[n - want :])


def width_targets(config: dict, prune) -> tuple[int, int]:
    """(intermediate_size, num_key_value_heads) of the student, checked against the teacher."""
    inter = int(config["intermediate_size"])
    kv = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    want_i = inter if prune.intermediate_size is None else int(prune.intermediate_size)
    want_kv = kv if prune.kv_heads is None else int(prune.kv_heads)
    if not 1 <= want_i <= inter:
        raise ConvertError(
            f"recipe prune.intermediate_size = {want_i}; the teacher has {inter}: choose 1..{inter}"
        )
    if not 1 <= want_kv <= kv:
        raise ConvertError(
            f"recipe prune.kv_heads = {want_kv}; the teacher has {kv}: choose 1..{kv}"
        )
    return want_i, want_kv


def plan(config: dict, prune, layers: int | None, imp: Importance | None) -> Plan:
    """What the student keeps, and its config.json."""
    import torch

    bi = imp.block_influence if imp is not None else None
    keep = layers_to_keep(config, prune, layers, bi)
    want_i, want_kv = width_targets(config, prune)
    inter = int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    rep = heads // kv
    p = Plan(keep_layers=keep)
    if want_i < inter:
        p.intermediate = [sorted(torch.topk(imp.mlp[t], want_i).indices.tolist()) for t in keep]
    if want_kv < kv:
        p.kv_groups = []
        for t in keep:
            group = imp.heads[t].view(kv, rep).sum(-1)
            p.kv_groups.append(sorted(torch.topk(group, want_kv).indices.tolist()))
    cfg = dict(config)
    cfg["num_hidden_layers"] = len(keep)
    cfg["intermediate_size"] = want_i
    if want_kv < kv:
        cfg["head_dim"] = int(config.get("head_dim") or config["hidden_size"] // heads)
        cfg["num_attention_heads"] = want_kv * rep
        cfg["num_key_value_heads"] = want_kv
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = [config["layer_types"][t] for t in keep]
    if isinstance(cfg.get("max_window_layers"), int):
        cfg["max_window_layers"] = min(cfg["max_window_layers"], len(keep))
    p.config = cfg
    return p


def student_state(teacher_state: dict, config: dict, p: Plan) -> dict:
    """The student's tensors: the kept layers renumbered, rows/columns of the kept channels."""
    import torch

    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    rep = heads // kv
    hd = int(config.get("head_dim") or config["hidden_size"] // heads)
    out = {}
    prefix = "model.layers."
    for name, t in teacher_state.items():
        if not name.startswith(prefix):
            out[name] = t.clone()
            continue
        idx, rest = name[len(prefix) :].split(".", 1)
        idx = int(idx)
        if idx not in p.keep_layers:
            continue
        j = p.keep_layers.index(idx)
        if p.intermediate is not None:
            ch = torch.tensor(p.intermediate[j])
            if rest.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
                t = t.index_select(0, ch)
            elif rest == "mlp.down_proj.weight":
                t = t.index_select(1, ch)
        if p.kv_groups is not None:
            groups = p.kv_groups[j]
            kv_rows = torch.tensor([g * hd + d for g in groups for d in range(hd)])
            q_rows = torch.tensor(
                [(g * rep + r) * hd + d for g in groups for r in range(rep) for d in range(hd)]
            )
            if rest.startswith("self_attn.q_proj."):
                t = t.index_select(0, q_rows)
            elif rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                t = t.index_select(0, kv_rows)
            elif rest == "self_attn.o_proj.weight":
                t = t.index_select(1, q_rows)
        out[f"{prefix}{j}.{rest}"] = t.clone()
    return out


def build_student(teacher, p: Plan, seed: int = 0):
    """A new model of the teacher's class with the plan's config and sliced weights."""
    import torch

    config = type(teacher.config).from_dict(p.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial values are overwritten; keep the global RNG untouched
        student = type(teacher)(config)
    state = student_state(teacher.state_dict(), teacher.config.to_dict(), p)
    mine = student.state_dict()
    missing = sorted(set(mine) - set(state))
    if missing:
        raise ConvertError(f"internal: the student's {missing[0]} has no source; please report it")
    student.load_state_dict({k: state[k] for k in mine}, strict=True)
    return student.float().eval()
