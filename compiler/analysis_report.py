"""The result of :func:`~attnpat.compiler.analysis.analyze`: its numbers, derived figures and the report.

:class:`Analysis` holds what the analysis counted; its properties derive the density, tile efficiency and
FLOP counts; ``to_dict()`` is the JSON and ``report()`` (``str()``) the text ``attnpat explain`` prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from .check_score import ORDER

__all__ = ["Analysis"]


def _flops(pairs: str, doc: str) -> property:
    """A FLOP count: 4 * head_dim per pair counted in the field `pairs` (one rule for every such number)."""
    return property(lambda self: 4 * self.head_dim * getattr(self, pairs), doc=doc)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` found; ``str(analysis)`` is the readable report, ``to_dict()`` the JSON.

    Pair and row counts are summed over every (batch, head): a pattern that differs per head (per-head
    windows) or per batch element (runtime inputs given per batch) is counted slice by slice.

    Attributes:
        pattern: the pattern with its bound parameters, e.g. ``sliding_window(window=4096)``.
        canonical: the canonical mask text; ``key``: the canonical key (equal for equivalent spellings).
        q_len, kv_len, q_start: the shape; query row i sits at absolute position q_start + i.
        heads, batch, block_q, block_k, head_dim, layers: the other settings.
        allowed: allowed (b, h, q, k) pairs; ``total``: all of them (batch * heads * q_len * kv_len).
        tiles: {'EMPTY': .., 'PARTIAL': .., 'FULL': ..} summed over every (batch, head).
        loose_partial: PARTIAL tiles that turned out, point by point, to be all allowed or all masked (the
            block mask may leave a tile PARTIAL when it cannot prove more; the kernel still computes it).
        tile_pairs: (q, k) pairs inside the non-empty tiles -- what the kernel computes.
        causal_pairs: pairs full causal attention allows at this shape (closed form).
        lookback: max over queries of q - (its smallest allowed key); None when no query has a key.
        lookahead: max over queries of (its largest allowed key) - q, at least 0; None when no query has
            a key.
        max_keys: the most keys any single query attends to.
        empty_rows: (b, h, query) rows with no allowed key; ``rows``: batch * heads * q_len.
        receptive_field: how many positions back from the last query information can come after
            ``layers`` stacked layers (an interval bound: exact for windows and causal masks, an upper
            bound otherwise); None when it cannot be computed (see ``receptive_note``).
        variants: distinct masks over the (batch, head) slices (each analysed once).
        evaluated: points evaluated one by one (inside PARTIAL tiles) -- the analysis's own cost.
        scores: the canonical score statements (softcap, bias, sink), one per line; '' for plain attention.
    """

    pattern: str
    canonical: str
    key: str
    q_len: int
    kv_len: int
    q_start: int
    heads: int
    batch: int
    block_q: int
    block_k: int
    head_dim: int
    layers: int
    allowed: int
    total: int
    tiles: dict
    loose_partial: int
    tile_pairs: int
    causal_pairs: int
    lookback: int | None
    lookahead: int | None
    max_keys: int
    empty_rows: int
    rows: int
    receptive_field: int | None
    receptive_note: str = ""
    variants: int = 1
    evaluated: int = 0
    scores: str = ""

    # -- derived numbers ---------------------------------------------------------------------------

    @property
    def density(self) -> Fraction:
        """Allowed pairs / all pairs, exactly."""
        return Fraction(self.allowed, self.total) if self.total else Fraction(0)

    @property
    def density_float(self) -> float:
        return float(self.density)

    @property
    def tile_efficiency(self) -> float | None:
        """Allowed pairs / pairs inside the non-empty tiles (1.0: the kernel computes no masked pair)."""
        return self.allowed / self.tile_pairs if self.tile_pairs else None

    flops_kernel = _flops("tile_pairs", "4 * head_dim * pairs in non-empty tiles: the forward kernel's QK^T and "
                                        "PV matmuls.")
    flops_ideal = _flops("allowed", "4 * head_dim * allowed pairs: a kernel that computed only the allowed pairs.")
    flops_causal = _flops("causal_pairs", "4 * head_dim * causal pairs: full causal attention at this shape (the "
                                          "usual baseline).")
    flops_dense = _flops("total", "4 * head_dim * all pairs: full (non-causal) attention.")

    @property
    def kernel_vs_causal(self) -> float | None:
        return self.flops_kernel / self.flops_causal if self.causal_pairs else None

    @property
    def ideal_vs_causal(self) -> float | None:
        return self.flops_ideal / self.flops_causal if self.causal_pairs else None

    @property
    def kv_cache(self) -> int | None:
        """Entries a decoder's sliding KV cache needs to serve every query: look-back + 1."""
        return None if self.lookback is None else self.lookback + 1

    @property
    def all_rows_attend(self) -> bool:
        return self.empty_rows == 0

    # -- output ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every field and derived number as JSON-ready values (the density also as 'num/den')."""
        out = asdict(self)
        out.update({
            "density": self.density_float,
            "density_exact": f"{self.density.numerator}/{self.density.denominator}",
            "tile_efficiency": self.tile_efficiency,
            "flops": {"kernel": self.flops_kernel, "ideal": self.flops_ideal, "causal": self.flops_causal,
                      "dense": self.flops_dense, "kernel_vs_causal": self.kernel_vs_causal,
                      "ideal_vs_causal": self.ideal_vs_causal},
            "kv_cache": self.kv_cache,
            "all_rows_attend": self.all_rows_attend,
        })
        return out

    def report(self) -> str:
        """The readable report (what ``attnpat explain`` prints)."""
        lines = []
        where = f"q_len={self.q_len} kv_len={self.kv_len}"
        if self.heads > 1 or self.batch > 1:
            where += f" heads={self.heads} batch={self.batch}"
        lines.append(f"{self.pattern}  {where}")
        if self.q_start != 0:
            lines.append(f"  (query row i is at position q = i + {self.q_start})")
        rows = []
        rows.append(("canonical", self.canonical))
        if self.scores:
            rows += _score_rows(self.scores)
        rows.append(("key", self.key))
        slices = self.batch * self.heads
        per = f" over {slices} (batch, head) slices" if slices > 1 else ""
        if self.variants > 1:
            per += f", {self.variants} distinct masks"
        rows.append(("density", f"{_pct(self.density_float)} of pairs allowed "
                                f"({_n(self.allowed)} of {_n(self.total)}{per})"))
        t = self.tiles
        n_tiles = t["EMPTY"] + t["PARTIAL"] + t["FULL"]
        tiles = (f"{self.block_q} x {self.block_k}: {_n(t['FULL'])} full, {_n(t['PARTIAL'])} partial, "
                 f"{_n(t['EMPTY'])} empty ({_pct((t['FULL'] + t['PARTIAL']) / n_tiles if n_tiles else 0)} "
                 f"computed)")
        rows.append(("tiles", tiles))
        if self.loose_partial:
            rows.append(("", f"{_n(self.loose_partial)} partial tiles are in fact all allowed or all masked"))
        eff = self.tile_efficiency
        rows.append(("efficiency", "no tile is computed" if eff is None else
                     f"{_pct(eff)} of the pairs in computed tiles are allowed"))
        d = self.head_dim
        kv = self.kernel_vs_causal
        iv = self.ideal_vs_causal
        rows.append(("FLOPs", f"kernel {_flops_text(self.flops_kernel)}"
                              + ("" if kv is None else f" = {_ratio(kv)} full causal attention")
                              + f" (4 x head_dim {d} per computed pair)"))
        rows.append(("", f"ideal {_flops_text(self.flops_ideal)}"
                         + ("" if iv is None else f" = {_ratio(iv)} causal")
                         + f"; full causal {_flops_text(self.flops_causal)}; dense {_flops_text(self.flops_dense)}"))
        if self.lookback is None:
            rows.append(("look-back", "no query attends to any key"))
        else:
            rows.append(("look-back", f"{_n(self.lookback)} positions: a decoder's KV cache needs "
                                      f"{_n(self.kv_cache)} entries"
                                      + ("" if self.lookahead == 0 else " (but the pattern looks ahead)")))
            rows.append(("look-ahead", "0 (causal: no query sees a later key)" if self.lookahead == 0 else
                         f"{_n(self.lookahead)} positions"))
            rows.append(("keys/query", f"at most {_n(self.max_keys)}"))
        if self.empty_rows == 0:
            rows.append(("empty rows", "none: every query attends to at least one key"))
        else:
            rows.append(("empty rows", f"{_n(self.empty_rows)} of {_n(self.rows)} query rows attend to no key "
                                       f"(their output is 0" + ("; their lse is the sink)" if "score sink(" in
                                                                self.scores else ")")))
        layers = f"{self.layers} layer{'s' if self.layers != 1 else ''}"
        if self.receptive_field is None:
            rows.append(("receptive", f"after {layers}: unknown ({self.receptive_note})"))
        else:
            last = self.q_start + self.q_len - 1
            rows.append(("receptive", f"after {layers}: {_n(self.receptive_field)} positions back from the last "
                                      f"query (q = {_n(last)})"))
            if self.receptive_note:
                rows.append(("", self.receptive_note))
        width = max(len(r[0]) for r in rows)
        lines += [f"  {label:<{width}}  {text}".rstrip() for label, text in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


_SCORE_MEANING = {
    "softcap": "scores s become cap * tanh(s / cap)",
    "bias": "added to every score (after the softcap)",
    "sink": "one more logit per head in the softmax's denominator, attending to nothing",
}


def _score_rows(text: str) -> list[tuple[str, str]]:
    """The report's rows for the score terms, in the order they apply (scale, softcap, bias, mask, sink)."""
    rows = [("score terms", f"applied in order: {ORDER}")]
    for line in text.split("\n"):
        kind = line.removeprefix("score ").split("(", 1)[0]
        rows.append(("", f"{line.removeprefix('score ')}: {_SCORE_MEANING[kind]}"))
    return rows


def _n(x: int) -> str:
    return f"{x:,}"


def _pct(x: float) -> str:
    p = 100 * x
    if p == 0 or p >= 10 or p == 100:
        return f"{p:.1f}%" if p not in (0, 100) else f"{p:.0f}%"
    if p >= 0.1:
        return f"{p:.2f}%"
    return f"{p:.3g}%"


def _ratio(x: float) -> str:
    return f"{_pct(x)} of" if x <= 1 else f"{x:.2f}x"


def _flops_text(n: int) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} FLOP"
