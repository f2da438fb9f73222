r"""Custom systems typed as equations: a whitelist tokenizer, parser and closure compiler.

Users write a flow or a map as text, one equation per line or separated by ``;``::

    dx/dt = sigma*(y - x); dy/dt = x*(rho - z) - y; dz/dt = x*y - beta*z
    x' = 1 - a*x^2 + y;  y' = b*x

and give the parameter values separately (``{"sigma": 10, ...}``). :func:`parse_system` turns
both into a :class:`~explorer.core.system.Flow` or :class:`~explorer.core.system.Map` that
behaves like a built-in one (batched, any dtype/device, parameter sweeps, ``with_params``,
autograd Jacobian).

Safety: the text is never handed to Python. A hand-written tokenizer and a recursive-descent
(precedence climbing) parser accept only the grammar below; the syntax tree is compiled into
a tree of Python closures over whitelisted torch functions. There is no attribute access, no
indexing, no strings, no keywords and no way to name anything outside the whitelist.

Grammar (EBNF; whitespace is free, ``#`` starts a comment that runs to the end of the line)::

    system     = equation { separator equation } ;
    separator  = ";" | newline ;              (* a newline inside parentheses is a space *)
    equation   = lhs "=" expr ;
    lhs        = "d" ident "/" "d" "t"         (* flow:  dx/dt      *)
               | ident "'"                     (* map:   x'         *)
               | ident "_{n+1}" | ident "[n+1]"  (* map: x_{n+1}, x[n+1] *) ;
    expr       = term { ("+" | "-") term } ;               (* left associative *)
    term       = unary { ("*" | "/") unary } ;             (* left associative *)
    unary      = ("-" | "+") unary | power ;
    power      = atom [ ("**" | "^") unary ] ;             (* right associative *)
    atom       = number | ident | ident "(" expr { "," expr } ")" | "(" expr ")" ;
    number     = digits [ "." [digits] ] [exponent] | "." digits [exponent] ;
    exponent   = ("e" | "E") ["+" | "-"] digits ;
    ident      = letter { letter | digit | "_" } ;   (* ASCII; no "__"; no leading "_" *)

So ``-2**2 == -4``, ``2**3**2 == 512``, ``2^3 == 8`` (``^`` is power), ``2**-1 == 0.5``,
``1-2-3 == -4`` and ``8/4/2 == 1``, as in Python.

Names in an expression are, in this order: a state variable (the left-hand-side names, in
order of appearance; in a map ``x_n`` also means ``x``), a constant (``pi``, ``e``), or a
parameter (any other name; it must be declared with a value). ``t`` is not special: a forced
flow carries its phase as a variable, e.g. ``dphi/dt = omega``.

Functions (argument count in brackets):

    sin cos tan sinh cosh tanh exp [1]     log ln (natural) sqrt abs [1]
    sign heaviside [1]  (sign(0) = 0, heaviside(0) = 1/2; both propagate NaN)
    arcsin asin arccos acos arctan atan [1]
    atan2 arctan2 (y, x) [2]    min max [2]    mod (a, b) [2] (torch.remainder: sign of b)

Errors: every problem is an :class:`~explorer.core.errors.EquationError` with a one-line
message naming the offending token and its 0-based ``position`` in the text (``.token`` and
``.position`` carry both). Errors about the parameter mapping itself (a non-finite value, an
invalid or colliding name) have ``position`` ``None`` unless the name occurs in the text.
Limits: :data:`MAX_CHARS` characters and :data:`MAX_DEPTH` levels of nesting (never a
``RecursionError``).

A declared parameter that the equations never use is allowed (it stays a parameter of the
system, so sliders and URLs keep working while the user edits); :meth:`ParsedEquations.unused`
lists such names so the UI can show a hint.

Stochastic systems (:func:`parse_sde`): the drift is written like a flow (``dx/dt = ...`` or
``x' = ...``, both meaning the drift) and the noise as comma-separated expressions, one per
variable, giving the diagonal of the diffusion matrix ``D`` (Itô, ``dX_i = f_i dt +
sqrt(2 D_i) dW_i``), e.g. drift ``x' = -k*x`` with diffusion ``T``.

Public API: :func:`parse_system`, :func:`parse_sde`, :func:`parse_equations`,
:func:`validate_equations`, :func:`validate_sde`, :class:`ParsedEquations`,
:data:`FUNCTIONS`, :data:`CONSTANTS`.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence, Union

import torch

from .autodiff import jacobian as autodiff_jacobian
from .errors import EquationError, ParameterError
from .system import KINDS, SDE, DynamicalSystem, Param
from .traced import traced_jacobian

__all__ = ["parse_system", "parse_sde", "validate_sde", "parse_equations", "validate_equations",
           "ParsedEquations",
           "Equation", "FUNCTIONS", "CONSTANTS", "MAX_CHARS", "MAX_DEPTH",
           "Num", "Name", "Unary", "Chain", "Pow", "Call"]

MAX_CHARS = 10_000
"""Longest accepted equation text, in characters."""
MAX_DEPTH = 200
"""Deepest accepted nesting (parentheses, unary signs, powers, syntax-tree depth)."""
PARAM_BOUND = 1e6
"""Custom parameters accept values in ``[-B, B]`` with ``B = max(1e6, 10 |default|)``."""


# ----------------------------------------------------------------------------- functions
def _sign(a: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(a), a, torch.sign(a))


def _heaviside(a: torch.Tensor) -> torch.Tensor:
    return _sign(a) * 0.5 + 0.5


@dataclass(frozen=True)
class _Func:
    arity: int
    fn: Callable[..., torch.Tensor]
    tex: str


_F1 = {
    "sin": (torch.sin, r"\sin"), "cos": (torch.cos, r"\cos"), "tan": (torch.tan, r"\tan"),
    "sinh": (torch.sinh, r"\sinh"), "cosh": (torch.cosh, r"\cosh"),
    "tanh": (torch.tanh, r"\tanh"), "exp": (torch.exp, r"\exp"),
    "log": (torch.log, r"\ln"), "ln": (torch.log, r"\ln"),
    "sqrt": (torch.sqrt, r"\sqrt"), "abs": (torch.abs, "abs"),
    "sign": (_sign, r"\operatorname{sign}"), "heaviside": (_heaviside, r"\Theta"),
    "arcsin": (torch.asin, r"\arcsin"), "asin": (torch.asin, r"\arcsin"),
    "arccos": (torch.acos, r"\arccos"), "acos": (torch.acos, r"\arccos"),
    "arctan": (torch.atan, r"\arctan"), "atan": (torch.atan, r"\arctan"),
}
_F2 = {
    "atan2": (torch.atan2, r"\operatorname{atan2}"), "arctan2": (torch.atan2, r"\operatorname{atan2}"),
    "min": (torch.minimum, r"\min"), "max": (torch.maximum, r"\max"),
    "mod": (torch.remainder, r"\operatorname{mod}"),
}
FUNCTIONS: dict[str, _Func] = {**{k: _Func(1, f, t) for k, (f, t) in _F1.items()},
                               **{k: _Func(2, f, t) for k, (f, t) in _F2.items()}}
"""The function whitelist: name -> arity, torch implementation, LaTeX command."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
"""Named constants usable in equations."""

_FUNC_LIST = ", ".join(FUNCTIONS)

_GREEK = {g: "\\" + g for g in (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi",
    "Psi", "Omega", "varepsilon", "vartheta", "varphi", "varrho")}


# ----------------------------------------------------------------------------- syntax tree
@dataclass(frozen=True)
class Num:
    """A number literal as typed (``text``) and its value."""
    value: float
    text: str
    pos: int
    depth: int = 1


@dataclass(frozen=True)
class Name:
    """A name: ``role`` is ``"var"``, ``"param"`` or ``"const"``; ``ref`` is what it denotes
    (the state variable for the map alias ``x_n``, else the name itself)."""
    name: str
    role: str
    ref: str
    pos: int
    depth: int = 1


@dataclass(frozen=True)
class Unary:
    """Unary minus (unary plus is dropped by the parser)."""
    op: str
    operand: "Node"
    pos: int
    depth: int


@dataclass(frozen=True)
class Chain:
    """A left-associative chain of one precedence level: ``+``/``-`` or ``*``/``/``.
    ``ops[i]`` joins ``operands[i]`` and ``operands[i + 1]``."""
    ops: tuple[str, ...]
    operands: tuple["Node", ...]
    pos: int
    depth: int


@dataclass(frozen=True)
class Pow:
    """``base ** exponent`` (``op`` is ``"**"`` or ``"^"`` as typed)."""
    base: "Node"
    exponent: "Node"
    op: str
    pos: int
    depth: int


@dataclass(frozen=True)
class Call:
    """A whitelisted function applied to its arguments."""
    func: str
    args: tuple["Node", ...]
    pos: int
    depth: int


Node = Union[Num, Name, Unary, Chain, Pow, Call]


@dataclass(frozen=True)
class Equation:
    """One equation: ``variable`` is its left-hand-side state variable."""
    variable: str
    lhs: str
    rhs: Node
    position: int
    variable_position: int
    source: str


@dataclass(frozen=True)
class ParsedEquations:
    """The checked syntax of a system: what :func:`parse_equations` returns.

    Attributes:
        kind: ``"flow"`` or ``"map"``.
        variables: state variables in order of appearance.
        equations: one :class:`Equation` per variable, same order.
        parameters: names used as parameters, in order of first appearance.
        parameter_positions: where each parameter first occurs.
        functions: whitelisted functions used; constants: constants used.
        text: the source text.
    """

    kind: str
    variables: tuple[str, ...]
    equations: tuple[Equation, ...]
    parameters: tuple[str, ...]
    parameter_positions: Mapping[str, int]
    functions: tuple[str, ...]
    constants: tuple[str, ...]
    text: str

    @property
    def names(self) -> tuple[str, ...]:
        """Every name used: variables, parameters, constants and functions."""
        return self.variables + self.parameters + self.constants + self.functions

    def unused(self, params: Mapping[str, Any]) -> list[str]:
        """Declared parameters that no equation uses (allowed; the UI may hint)."""
        return [k for k in params if k not in self.parameters]

    def latex(self) -> str:
        """The equations in LaTeX, ``\\\\``-separated (``\\dot x = ...`` / ``x_{n+1} = ...``)."""
        return r" \\ ".join(f"{_tex_lhs(eq.variable, self.kind)} = {_tex(eq.rhs, self.kind)}"
                            for eq in self.equations)

    def canonical(self) -> str:
        """The equations re-printed from the syntax tree (parses back to the same tree)."""
        lhs = (lambda v: f"d{v}/dt") if self.kind == "flow" else (lambda v: f"{v}'")
        return "; ".join(f"{lhs(eq.variable)} = {_txt(eq.rhs)}" for eq in self.equations)

    def compile(self) -> "_Program":
        """The batched torch function ``(x, params) -> (..., D)`` (closure tree, no eval)."""
        return _Program(self)


# ----------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "name" | "op" | "sep" | "bad"
    text: str
    pos: int
    note: str = ""


_NUM_RE = re.compile(r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_WORDISH_RE = re.compile(r"[A-Za-z0-9_]+")
_OP_CHARS = "+-*/^(),='[]{}"
_BAD_HINTS = {
    "%": "use mod(a, b) for the remainder",
    ".": "attribute access is not allowed",
    '"': "strings are not allowed",
    "<": "comparisons are not supported", ">": "comparisons are not supported",
    "!": "comparisons and logic are not supported", "&": "logic operators are not supported",
    "|": "use abs(x) for the absolute value", "\\": "backslashes are not allowed",
    ":": "':' is not allowed", "@": "'@' is not allowed", "`": "backquotes are not allowed",
}


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n, depth = 0, len(text), 0
    while i < n:
        c = text[i]
        if c in " \t\r\f\v":
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "\n" or c == ";":
            if c == ";" or depth == 0:
                toks.append(_Tok("sep", c, i))
                depth = 0
            i += 1
        elif "0" <= c <= "9" or (c == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            m = _NUM_RE.match(text, i)
            assert m is not None
            s = m.group()
            if not math.isfinite(float(s)):
                toks.append(_Tok("bad", s, i, "number is too large"))
            else:
                toks.append(_Tok("num", s, i))
            i = m.end()
        elif ("a" <= c <= "z") or ("A" <= c <= "Z"):
            m = _NAME_RE.match(text, i)
            assert m is not None
            s = m.group()
            if "__" in s:
                toks.append(_Tok("bad", s, i, "double underscores are not allowed in names"))
            else:
                toks.append(_Tok("name", s, i))
            i = m.end()
        elif c == "_":
            m = _WORDISH_RE.match(text, i)
            assert m is not None
            toks.append(_Tok("bad", m.group(), i, "names must start with a letter"))
            i = m.end()
        elif text.startswith("**", i):
            toks.append(_Tok("op", "**", i))
            i += 2
        elif c in _OP_CHARS:
            if c == "(":
                depth += 1
            elif c == ")":
                depth = max(depth - 1, 0)
            toks.append(_Tok("op", c, i))
            i += 1
        else:
            if not c.isascii():
                hint = "only ASCII letters, digits and operators are allowed (write sigma, not σ)"
            else:
                hint = _BAD_HINTS.get(c, "this character is not allowed")
            toks.append(_Tok("bad", c, i, hint))
            i += 1
    return toks


# ----------------------------------------------------------------------------- parser
_BINARY = {"+": 1, "-": 1, "*": 2, "/": 2, "**": 4, "^": 4}
_UNARY_PREC = 3
_RIGHT_ASSOC = ("**", "^")


def _err(message: str, tok: str | None, pos: int | None) -> EquationError:
    return EquationError(message, token=tok, position=pos)


class _Parser:
    """Recursive descent with precedence climbing over one right-hand side."""

    def __init__(self, toks: list[_Tok], after: _Tok, variables: Mapping[str, int], kind: str):
        self.toks = toks
        self.i = 0
        self.after = after  # the '=' token: for "missing operand" messages at the start
        self.variables = variables
        self.kind = kind
        self.opens: list[_Tok] = []
        self.params: dict[str, int] = {}
        self.functions: dict[str, None] = {}
        self.constants: dict[str, None] = {}

    # -- helpers
    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def prev(self) -> _Tok:
        return self.toks[self.i - 1] if self.i > 0 else self.after

    def hint_open(self) -> str:
        if self.opens:
            o = self.opens[-1]
            return f" (is a ')' missing for the '(' at position {o.pos}?)"
        return ""

    def unexpected(self, tok: _Tok, expecting: str = "") -> EquationError:
        what = f"unexpected {tok.text!r} at position {tok.pos}"
        if expecting:
            what += f"; expected {expecting}"
        return _err(what + self.hint_open(), tok.text, tok.pos)

    def check_depth(self, depth: int, tok: _Tok | None) -> None:
        if depth > MAX_DEPTH:
            t = tok or self.prev()
            raise _err(f"expression is nested too deeply at {t.text!r} position {t.pos} "
                       f"(limit {MAX_DEPTH} levels)", t.text, t.pos)

    # -- grammar
    def parse(self) -> Node:
        node = self.expr(0, 1)
        tok = self.peek()
        if tok is not None:
            if tok.text == ")":
                raise _err(f"unbalanced parenthesis: ')' at position {tok.pos} has no matching '('",
                           tok.text, tok.pos)
            p = self.prev()
            if tok.kind in ("num", "name") or tok.text == "(":
                if p.kind in ("num", "name") or p.text == ")":
                    raise _err(f"unexpected {tok.text!r} at position {tok.pos}: missing operator "
                               f"(write '*' for multiplication)", tok.text, tok.pos)
            raise self.unexpected(tok, "an operator or the end of the equation")
        return node

    def expr(self, min_prec: int, depth: int) -> Node:
        self.check_depth(depth, self.peek())
        left = self.prefix(depth)
        own_chain = False
        while True:
            tok = self.peek()
            if tok is None or tok.kind != "op" or tok.text not in _BINARY:
                return left
            prec = _BINARY[tok.text]
            if prec < min_prec:
                return left
            self.i += 1
            if tok.text in _RIGHT_ASSOC:
                right = self.expr(prec, depth + 1)
                left = self.node(Pow(left, right, tok.text, tok.pos,
                                     1 + max(left.depth, right.depth)), tok)
                own_chain = False
                continue
            right = self.expr(prec + 1, depth + 1)
            if own_chain and isinstance(left, Chain) and _BINARY[left.ops[0]] == prec:
                left = self.node(Chain(left.ops + (tok.text,), left.operands + (right,), left.pos,
                                       max(left.depth, 1 + right.depth)), tok)
            else:
                left = self.node(Chain((tok.text,), (left, right), tok.pos,
                                       1 + max(left.depth, right.depth)), tok)
                own_chain = True

    def node(self, n: Node, tok: _Tok) -> Node:
        if n.depth > MAX_DEPTH:
            raise _err(f"expression is nested too deeply at {tok.text!r} position {tok.pos} "
                       f"(limit {MAX_DEPTH} levels)", tok.text, tok.pos)
        return n

    def prefix(self, depth: int) -> Node:
        tok = self.peek()
        if tok is None:
            p = self.prev()
            raise _err(f"incomplete expression after {p.text!r} at position {p.pos}"
                       + self.hint_open(), p.text, p.pos)
        self.i += 1
        if tok.kind == "op" and tok.text in ("-", "+"):
            operand = self.expr(_UNARY_PREC, depth + 1)
            if tok.text == "+":
                return operand
            return self.node(Unary("-", operand, tok.pos, 1 + operand.depth), tok)
        if tok.kind == "num":
            return Num(float(tok.text), tok.text, tok.pos)
        if tok.kind == "name":
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self.call(tok, depth)
            return self.name(tok)
        if tok.text == "(":
            self.opens.append(tok)
            inner = self.expr(0, depth + 1)
            close = self.peek()
            if close is None:
                raise _err(f"unbalanced parenthesis: '(' at position {tok.pos} is never closed",
                           "(", tok.pos)
            if close.text != ")":
                raise self.unexpected(close, "')' or an operator")
            self.i += 1
            self.opens.pop()
            return inner
        if tok.kind == "bad":  # pragma: no cover - bad tokens are reported before parsing
            raise _err(f"{tok.note}: {tok.text!r} at position {tok.pos}", tok.text, tok.pos)
        raise self.unexpected(tok, "a number, a name or '('")

    def name(self, tok: _Tok) -> Name:
        s = tok.text
        if s in self.variables:
            return Name(s, "var", s, tok.pos)
        if self.kind == "map" and s.endswith("_n") and s[:-2] in self.variables:
            return Name(s, "var", s[:-2], tok.pos)
        if s in CONSTANTS:
            self.constants[s] = None
            return Name(s, "const", s, tok.pos)
        if s in FUNCTIONS:
            raise _err(f"function {s!r} at position {tok.pos} needs arguments, e.g. {s}(x)",
                       s, tok.pos)
        self.params.setdefault(s, tok.pos)
        return Name(s, "param", s, tok.pos)

    def call(self, tok: _Tok, depth: int) -> Node:
        s = tok.text
        if s not in FUNCTIONS:
            if s in self.variables or s in CONSTANTS:
                raise _err(f"{s!r} at position {tok.pos} is not a function "
                           f"(write '*' for multiplication: {s}*(...))", s, tok.pos)
            close = difflib.get_close_matches(s, list(FUNCTIONS), n=1)
            dym = f"; did you mean {close[0]!r}?" if close else ""
            raise _err(f"unknown function {s!r} at position {tok.pos}{dym} "
                       f"(functions: {_FUNC_LIST}; write '*' for multiplication)", s, tok.pos)
        spec = FUNCTIONS[s]
        open_tok = self.toks[self.i]
        self.i += 1
        self.opens.append(open_tok)
        args: list[Node] = []
        nxt = self.peek()
        if nxt is not None and nxt.text == ")":
            self.i += 1
        else:
            while True:
                args.append(self.expr(0, depth + 1))
                nxt = self.peek()
                if nxt is None:
                    raise _err(f"unbalanced parenthesis: '(' at position {open_tok.pos} is never "
                               f"closed", "(", open_tok.pos)
                self.i += 1
                if nxt.text == ")":
                    break
                if nxt.text != ",":
                    self.i -= 1
                    raise self.unexpected(nxt, "',' or ')'")
        self.opens.pop()
        if len(args) != spec.arity:
            plural = "argument" if spec.arity == 1 else "arguments"
            raise _err(f"function {s!r} at position {tok.pos} takes {spec.arity} {plural}, "
                       f"got {len(args)}", s, tok.pos)
        self.functions[s] = None
        return self.node(Call(s, tuple(args), tok.pos, 1 + max((a.depth for a in args), default=0)),
                         tok)


# ----------------------------------------------------------------------------- equations
_FLOW_LHS = re.compile(r"d([A-Za-z][A-Za-z0-9_]*)/dt\Z")
_MAP_LHS = (re.compile(r"([A-Za-z][A-Za-z0-9_]*)'\Z"),
            re.compile(r"([A-Za-z][A-Za-z0-9_]*?)_\{n\+1\}\Z"),
            re.compile(r"([A-Za-z][A-Za-z0-9_]*?)\[n\+1\]\Z"))


def _lhs(toks: list[_Tok], eq_tok: _Tok) -> tuple[str, str, int, str]:
    """(kind, variable, variable position, lhs text) of a left-hand side, or raise."""
    if not toks:
        raise _err(f"missing left-hand side before '=' at position {eq_tok.pos} "
                   f"(write dx/dt = ... or x' = ...)", "=", eq_tok.pos)
    for t in toks:
        if t.kind == "bad":
            raise _err(f"{t.note}: {t.text!r} at position {t.pos}", t.text, t.pos)
    compact = "".join(t.text for t in toks)
    starts: list[int] = []
    for t in toks:
        starts.extend(range(t.pos, t.pos + len(t.text)))
    m = _FLOW_LHS.match(compact)
    if m:
        return "flow", m.group(1), starts[1], compact
    for rx in _MAP_LHS:
        m = rx.match(compact)
        if m:
            return "map", m.group(1), starts[0], compact
    raise _err(f"left-hand side {compact!r} at position {toks[0].pos} must be dx/dt (a flow) "
               f"or x' (a map)", compact, toks[0].pos)


def _split(toks: list[_Tok]) -> list[list[_Tok]]:
    eqs: list[list[_Tok]] = [[]]
    for t in toks:
        if t.kind == "sep":
            eqs.append([])
        else:
            eqs[-1].append(t)
    return [e for e in eqs if e]


def _first_unclosed(toks: list[_Tok]) -> _Tok | None:
    stack: list[_Tok] = []
    for t in toks:
        if t.text == "(":
            stack.append(t)
        elif t.text == ")" and stack:
            stack.pop()
    return stack[0] if stack else None


def _sort_key(e: EquationError) -> tuple[int, int]:
    return (0, e.position) if e.position is not None else (1, 0)


def line_column(text: str, position: int) -> tuple[int, int]:
    """1-based (line, column) of a 0-based character offset in ``text``."""
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1


_POSITION = re.compile(r"\bposition (\d+)")


def _located(e: EquationError, text: str) -> EquationError:
    """The error with every "position N" in its message written as "line L, column C" (what
    an editor shows); ``.line``/``.column`` locate its token (``.position`` is kept)."""
    def where(m: re.Match) -> str:
        line, col = line_column(text, int(m.group(1)))
        return f"line {line}, column {col}"

    out = EquationError(_POSITION.sub(where, str(e)), token=e.token, position=e.position)
    out.line, out.column = line_column(text, e.position) if e.position is not None else (None, None)
    return out


def _analyze(text: Any, params: Mapping[str, Any] | None
             ) -> tuple[ParsedEquations | None, list[EquationError], dict[str, float]]:
    """Parse and check; collect every error found (one per equation, at most), located by
    line and column."""
    parsed, errors, values = _analyze_offsets(text, params)
    if isinstance(text, str):
        errors = [_located(e, text) for e in errors]
    return parsed, errors, values


def _analyze_offsets(text: Any, params: Mapping[str, Any] | None
                     ) -> tuple[ParsedEquations | None, list[EquationError], dict[str, float]]:
    """Parse and check; collect every error found (one per equation, at most)."""
    errors: list[EquationError] = []
    values: dict[str, float] = {}
    if not isinstance(text, str):
        return None, [_err(f"equations must be text, got {type(text).__name__}", None, None)], values
    if len(text) > MAX_CHARS:
        return None, [_err(f"equations are too long: {len(text)} characters at position "
                           f"{MAX_CHARS} (limit {MAX_CHARS})", text[MAX_CHARS:MAX_CHARS + 10],
                           MAX_CHARS)], values
    raw = _split(_tokenize(text))
    if not raw:
        return None, [_err("no equations at position 0: write one per line, e.g. dx/dt = -x "
                           "(a flow) or x' = r*x*(1 - x) (a map)", "", 0)], values

    # pass 1: left-hand sides -> kind and variables
    kind: str | None = None
    variables: dict[str, int] = {}
    lhs_ok = True
    parts: list[tuple[list[_Tok], _Tok, str, str, int, str] | None] = []
    for toks in raw:
        try:
            eqs = [j for j, t in enumerate(toks) if t.kind == "op" and t.text == "="]
            if not eqs:
                t0 = toks[0]
                raise _err(f"missing '=' in the equation starting {t0.text!r} at position "
                           f"{t0.pos}", t0.text, t0.pos)
            if len(eqs) > 1:
                second = toks[eqs[1]]
                unclosed = _first_unclosed(toks[eqs[0] + 1:eqs[1]])
                if unclosed is not None:
                    raise _err(f"unbalanced parenthesis: '(' at position {unclosed.pos} is never "
                               f"closed", "(", unclosed.pos)
                raise _err(f"unexpected second '=' at position {second.pos} (one '=' per "
                           f"equation; separate equations with ';' or a new line)", "=", second.pos)
            eq_tok = toks[eqs[0]]
            k, var, vpos, lhs_text = _lhs(toks[:eqs[0]], eq_tok)
            if var in FUNCTIONS or var in CONSTANTS:
                what = "function" if var in FUNCTIONS else "constant"
                raise _err(f"variable name {var!r} at position {vpos} is reserved (it is a "
                           f"{what}); choose another name", var, vpos)
            if kind is None:
                kind = k
            elif k != kind:
                other = "flow equations (dx/dt = ...)" if kind == "flow" else "map equations (x' = ...)"
                raise _err(f"cannot mix {lhs_text!r} at position {toks[0].pos} with {other}: "
                           f"all equations must be of one kind", lhs_text, toks[0].pos)
            if var in variables:
                raise _err(f"duplicate equation for {var!r} at position {vpos} (first defined at "
                           f"position {variables[var]})", var, vpos)
            variables[var] = vpos
            parts.append((toks[eqs[0] + 1:], eq_tok, var, lhs_text, vpos,
                          " ".join(text[toks[0].pos:toks[-1].pos + len(toks[-1].text)].split())))
        except EquationError as e:
            errors.append(e)
            lhs_ok = False
            parts.append(None)
    assert kind is not None or not lhs_ok

    # pass 2: right-hand sides
    var_index = {v: i for i, v in enumerate(variables)}
    equations: list[Equation] = []
    param_pos: dict[str, int] = {}
    funcs: dict[str, None] = {}
    consts: dict[str, None] = {}
    rhs_ok = True
    for toks, part in zip(raw, parts):
        if part is None:
            continue
        rhs, eq_tok, var, lhs_text, vpos, source = part
        try:
            if not rhs:
                raise _err(f"missing right-hand side after '=' at position {eq_tok.pos}",
                           "=", eq_tok.pos)
            for t in rhs:
                if t.kind == "bad":
                    raise _err(f"{t.note}: {t.text!r} at position {t.pos}", t.text, t.pos)
            parser = _Parser(rhs, eq_tok, var_index, kind or "flow")
            try:
                tree = parser.parse()
            except RecursionError:  # belt and braces: the depth limits come first
                raise _err(f"expression is nested too deeply at position {eq_tok.pos}",
                           "=", eq_tok.pos) from None
            equations.append(Equation(var, lhs_text, tree, toks[0].pos, vpos, source))
            for k2, p in parser.params.items():
                param_pos.setdefault(k2, p)
            funcs.update(parser.functions)
            consts.update(parser.constants)
        except EquationError as e:
            errors.append(e)
            rhs_ok = False

    # parameters given as a mapping
    if params is not None:
        if not isinstance(params, Mapping):
            errors.append(_err(f"parameters must be a mapping name -> value, got "
                               f"{type(params).__name__}", None, None))
            params = {}
        for key, value in params.items():
            kpos = param_pos.get(key) if isinstance(key, str) else None
            if not isinstance(key, str) or not _IDENT_RE.match(key) or "__" in key:
                errors.append(_err(f"invalid parameter name {key!r}: use letters, digits and "
                                   f"single underscores, starting with a letter", str(key), None))
                continue
            if key in variables:
                errors.append(_err(f"parameter {key!r} has the same name as the state variable "
                                   f"at position {variables[key]}", key, variables[key]))
                continue
            if kind == "map" and key.endswith("_n") and key[:-2] in variables:
                where = f" at position {kpos}" if kpos is not None else ""
                errors.append(_err(f"parameter {key!r}{where} collides with the map variable "
                                   f"{key[:-2]!r} (x_n means x in a map)", key, kpos))
                continue
            if key in FUNCTIONS or key in CONSTANTS:
                what = "function" if key in FUNCTIONS else "constant"
                where = f" at position {kpos}" if kpos is not None else ""
                errors.append(_err(f"parameter {key!r}{where} has the same name as a {what}",
                                   key, kpos))
                continue
            fv = _number(value)
            if fv is None or not math.isfinite(fv):
                where = f" (used at position {kpos})" if kpos is not None else ""
                errors.append(_err(f"parameter {key!r} must be a finite number, got "
                                   f"{_show(value)}{where}", key, kpos))
                continue
            values[key] = fv
        if lhs_ok:
            known = sorted(params, key=str)
            for key, pos in param_pos.items():
                if key in params:
                    continue
                close = difflib.get_close_matches(key, [*map(str, known), *variables], n=1)
                dym = f"; did you mean {close[0]!r}?" if close else ""
                hint = ""
                if key == "t" and kind == "flow":
                    hint = " (time is not a variable: add a phase variable, e.g. dphi/dt = 1)"
                errors.append(_err(
                    f"unknown name {key!r} at position {pos}{dym}{hint} (variables: "
                    f"{', '.join(variables) or 'none'}; parameters: "
                    f"{', '.join(map(str, known)) or 'none'}; functions: {_FUNC_LIST})", key, pos))

    errors.sort(key=_sort_key)
    if errors or not (lhs_ok and rhs_ok) or kind is None:
        return None, errors, values
    parsed = ParsedEquations(kind, tuple(variables), tuple(equations), tuple(param_pos),
                             dict(param_pos), tuple(funcs), tuple(consts), text)
    return parsed, errors, values


def _number(value: Any) -> float | None:
    if isinstance(value, (str, bytes)):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            return None
        return float(value.item())
    try:
        return float(value)
    except Exception:  # anything that is not a real number
        return None


def _show(value: Any) -> str:
    s = repr(value) if not isinstance(value, torch.Tensor) else f"a tensor of shape {tuple(value.shape)}"
    s = " ".join(s.split())
    return s if len(s) <= 40 else s[:37] + "..."


# ----------------------------------------------------------------------------- public API
def parse_equations(text: str) -> ParsedEquations:
    """Parse and check the syntax of a system; names that are neither variables, constants nor
    functions are taken as parameters (see ``.parameters``). Raises :class:`EquationError`
    (the first error in the text)."""
    parsed, errors, _ = _analyze(text, None)
    if errors:
        raise errors[0]
    assert parsed is not None
    return parsed


def validate_equations(text: str, params: Mapping[str, Any] | None = None) -> list[EquationError]:
    """Every error found, sorted by position (``[]`` when the text is fine); never raises.

    With ``params=None`` undeclared names count as parameters (check-as-you-type before the
    values exist); with a mapping, every parameter used must be declared there.
    """
    return _analyze(text, params)[1]


def parse_system(text: str, params: Mapping[str, float] | None = None, *, name: str = "custom",
                 x0: Sequence[float] | None = None, dt: float | None = None) -> DynamicalSystem:
    """Build a :class:`Flow` or :class:`Map` from equations typed as text.

    Args:
        text: the equations (see the module docstring for the grammar).
        params: ``{name: value}`` for every parameter the equations use; the values become
            the system's defaults (unused entries are kept as parameters too).
        name: the system's ``name``.
        x0: default initial condition (one value per variable; default :func:`generic_x0`).
        dt: default time step (default 0.01 for flows, 1 for maps).

    Returns an instance (at the given parameter values) of a class built for this call, so
    ``with_params``, tensor-valued sweeps and the autograd Jacobian work as for built-ins.
    Raises :class:`EquationError` on the first problem in the text or arguments.
    """
    parsed, errors, values = _analyze(text, {} if params is None else params)
    if errors:
        raise errors[0]
    assert parsed is not None
    d = len(parsed.variables)
    if x0 is None:
        x0t = generic_x0(d)
    else:
        try:
            if isinstance(x0, (str, bytes)):
                raise TypeError
            x0t = tuple(float(v) for v in x0)
        except Exception:
            raise _err(f"x0 must be {d} numbers, got {_show(x0)}", None, None) from None
        if len(x0t) != d or not all(math.isfinite(v) for v in x0t):
            raise _err(f"x0 must be {d} finite numbers (one per variable: "
                       f"{', '.join(parsed.variables)}), got {_show(x0)}", None, None)
    if dt is None:
        dtv = 0.01 if parsed.kind == "flow" else 1.0
    else:
        dtv = _number(dt)  # type: ignore[assignment]
        if dtv is None or not math.isfinite(dtv) or dtv <= 0:
            raise _err(f"dt must be a positive number, got {_show(dt)}", None, None)
    if not isinstance(name, str) or not name.strip():
        raise _err(f"name must be a non-empty string, got {_show(name)}", None, None)
    return _build_class(parsed, values, name, x0t, dtv)()


# ----------------------------------------------------------------------------- compiler
_Compiled = Union[float, Callable[[Sequence[torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]]
_CHAIN_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _fold(fn: Callable[..., Any], *vals: float) -> float:
    """Evaluate a constant sub-expression with torch float64 semantics (inf/nan, no errors)."""
    return float(fn(*(torch.tensor(v, dtype=torch.float64) for v in vals)).item())


def _compile(node: Node, var_index: Mapping[str, int]) -> _Compiled:
    """Closure tree for ``node``; constant sub-trees are folded to Python floats."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        if node.role == "const":
            return CONSTANTS[node.ref]
        if node.role == "var":
            i = var_index[node.ref]
            return lambda xs, ps: xs[i]
        key = node.ref
        return lambda xs, ps: ps[key]
    if isinstance(node, Unary):
        a = _compile(node.operand, var_index)
        if isinstance(a, float):
            return -a
        return lambda xs, ps: -a(xs, ps)
    if isinstance(node, Pow):
        b = _compile(node.base, var_index)
        e = _compile(node.exponent, var_index)
        if isinstance(b, float) and isinstance(e, float):
            return _fold(torch.pow, b, e)
        if isinstance(b, float):
            return lambda xs, ps: b ** e(xs, ps)  # type: ignore[operator]
        if isinstance(e, float):
            return lambda xs, ps: b(xs, ps) ** e
        return lambda xs, ps: b(xs, ps) ** e(xs, ps)  # type: ignore[operator]
    if isinstance(node, Chain):
        comps = [_compile(o, var_index) for o in node.operands]
        ops = [_CHAIN_OPS[o] for o in node.ops]
        head = comps[0]
        k = 1
        while k < len(comps) and isinstance(head, float) and isinstance(comps[k], float):
            head = _fold(ops[k - 1], head, comps[k])  # type: ignore[arg-type]
            k += 1
        if k == len(comps):
            return head
        rest = [(ops[j - 1], comps[j], isinstance(comps[j], float)) for j in range(k, len(comps))]
        first = head

        def chain(xs, ps):
            v = first if isinstance(first, float) else first(xs, ps)
            for op, c, const in rest:
                v = op(v, c if const else c(xs, ps))
            return v
        return chain
    if isinstance(node, Call):
        spec = FUNCTIONS[node.func]
        fn = spec.fn
        args = [_compile(a, var_index) for a in node.args]
        if all(isinstance(a, float) for a in args):
            return _fold(fn, *args)  # type: ignore[arg-type]
        if spec.arity == 1:
            (a,) = args
            return lambda xs, ps: fn(a(xs, ps))  # type: ignore[operator]
        a, b = args
        if isinstance(a, float):
            return lambda xs, ps: _with_const_first(fn, a, b(xs, ps))  # type: ignore[operator]
        if isinstance(b, float):
            return lambda xs, ps: _with_const_second(fn, a(xs, ps), b)  # type: ignore[operator]
        return lambda xs, ps: fn(a(xs, ps), b(xs, ps))  # type: ignore[operator]
    raise TypeError(f"not a syntax-tree node: {node!r}")  # pragma: no cover


def _with_const_first(fn, c: float, t: torch.Tensor) -> torch.Tensor:
    return fn(torch.tensor(c, dtype=t.dtype), t)


def _with_const_second(fn, t: torch.Tensor, c: float) -> torch.Tensor:
    return fn(t, torch.tensor(c, dtype=t.dtype))


def _uses_var(node: Node) -> bool:
    if isinstance(node, Name):
        return node.role == "var"
    if isinstance(node, Num):
        return False
    if isinstance(node, Unary):
        return _uses_var(node.operand)
    if isinstance(node, Pow):
        return _uses_var(node.base) or _uses_var(node.exponent)
    if isinstance(node, Chain):
        return any(_uses_var(o) for o in node.operands)
    return any(_uses_var(a) for a in node.args)


class _Program:
    """The compiled right-hand side: ``(x (..., D), params) -> (..., D)``."""

    def __init__(self, parsed: ParsedEquations):
        index = {v: i for i, v in enumerate(parsed.variables)}
        self.components = [_compile(eq.rhs, index) for eq in parsed.equations]
        self.param_names = parsed.parameters
        self.dim = len(parsed.variables)
        self.uses_state = any(_uses_var(eq.rhs) for eq in parsed.equations)

    def tensor_params(self, x: torch.Tensor, p: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ps: dict[str, torch.Tensor] = {}
        for k in self.param_names:
            v = p[k]
            if isinstance(v, torch.Tensor):
                # a 0-d CPU tensor mixes with tensors on any device without a copy
                keep = v.device == x.device or (v.ndim == 0 and v.device.type == "cpu")
                if v.dtype != x.dtype or not keep:
                    v = v.to(dtype=x.dtype, device=v.device if keep else x.device)
                ps[k] = v
            else:
                ps[k] = torch.tensor(float(v), dtype=x.dtype)
        return ps

    def __call__(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        xs = x.unbind(-1)
        ps = self.tensor_params(x, p)
        outs = [c if isinstance(c, float) else c(xs, ps) for c in self.components]
        shape = torch.broadcast_shapes(x.shape[:-1], *(o.shape for o in outs
                                                      if isinstance(o, torch.Tensor)))
        cols = []
        for o in outs:
            if isinstance(o, float):
                # torch.tensor (unlike new_full) turns an out-of-range constant into inf
                cols.append(torch.tensor(o, dtype=x.dtype, device=x.device).expand(shape))
                continue
            if o.dtype != x.dtype or o.device != x.device:
                o = o.to(dtype=x.dtype, device=x.device)
            cols.append(o if o.shape == shape else o.expand(shape))
        return torch.stack(cols, -1)


# ----------------------------------------------------------------------------- system class
class _CustomSystem(DynamicalSystem):
    """Shared behaviour of the per-call classes built by :func:`parse_system`."""

    origin = "custom"
    traced_field = True   # field and Jacobian from one traced program (explorer.core.traced)
    equations: ParsedEquations
    source: str = ""
    _program: _Program
    _spec: dict[str, Any]

    def rhs(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        return self._program(x, p)

    def jacobian(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        shapes = [p[k].shape for k in self._program.param_names if isinstance(p[k], torch.Tensor)]
        batch = torch.broadcast_shapes(x.shape[:-1], *shapes)
        if batch != x.shape[:-1]:
            x = x.expand(*batch, x.shape[-1]).contiguous()
        if not self._program.uses_state:
            return x.new_zeros(*batch, self.dim, self.dim)
        tj = traced_jacobian(self)        # the equations' exact partials, traceable into C
        if tj is not None:
            return tj(x, p)
        # one forward and one backward pass over D copies of the batch (explorer.core.autodiff)
        return autodiff_jacobian(lambda z: self.rhs(z, p), x)

    def __reduce__(self):
        return (_rebuild, (dict(self._spec), dict(self.params)))


def generic_x0(d: int) -> tuple[float, ...]:
    """A default initial condition off the usual invariant sets: distinct, non-zero values of
    both signs (equal coordinates would put a symmetric system such as Thomas' on its
    invariant diagonal, zeros on the axes that many flows leave invariant)."""
    return tuple(round(0.1 * (1.0 + 0.37 * k) * (-1.0) ** k, 4) for k in range(d))


def _rebuild(spec: dict[str, Any], params: dict[str, Any]) -> DynamicalSystem:
    return type(parse_system(**spec))(**params)


def _build_class(parsed: ParsedEquations, values: Mapping[str, float], name: str,
                 x0: tuple[float, ...], dt: float) -> type[DynamicalSystem]:
    params = []
    for k, v in values.items():
        bound = max(PARAM_BOUND, 10.0 * abs(v))
        doc = f"user parameter {k}" + ("" if k in parsed.parameters else " (not used by the equations)")
        params.append(Param(k, v, -bound, bound, doc))
    kind_word = parsed.kind                   # the parsed syntax: "flow" or "map"
    pv = ", ".join(f"{k} = {v:g}" for k, v in values.items())
    description = (f"Custom {kind_word} entered as equations: "
                   + "; ".join(eq.source for eq in parsed.equations)
                   + (f". Parameters: {pv}." if pv else "."))
    base = KINDS[parsed.kind]
    attrs = {
        "__module__": __name__,
        "__doc__": f"Custom {kind_word}: " + "; ".join(eq.source for eq in parsed.equations),
        "name": name,
        "title": f"Custom {kind_word}",
        "variables": parsed.variables,
        "parameters": tuple(params),
        "default_x0": x0,
        "default_dt": dt,
        "latex": parsed.latex(),
        "description": description,
        "origin": "custom",
        "equations": parsed,
        "source": parsed.text,
        "_program": parsed.compile(),
        "_spec": {"text": parsed.text, "params": dict(values), "name": name, "x0": x0, "dt": dt},
    }
    cls_name = "Custom" + base.__name__
    return type(cls_name, (_CustomSystem, base), attrs)


# ----------------------------------------------------------------------------- printing
def _prec(n: Node) -> int:
    if isinstance(n, Chain):
        return 2 if n.ops[0] in "*/" else 1
    if isinstance(n, Unary):
        return 3
    if isinstance(n, Pow):
        return 4
    return 5


def _split_ident(name: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z]+?)_?([0-9]+)", name)
    if m:
        return m.group(1), m.group(2)
    if "_" in name:
        a, b = name.split("_", 1)
        return a, b
    return name, ""


def _tex_word(w: str) -> str:
    if w in _GREEK:
        return _GREEK[w]
    if len(w) == 1 or w.isdigit():
        return w
    return r"\mathrm{" + w.replace("_", r"\_") + "}"


def _tex_ident(name: str, extra_sub: str = "") -> str:
    base, sub = _split_ident(name)
    subs = [s for s in (_tex_word(sub) if sub else "", extra_sub) if s]
    out = _tex_word(base)
    return out + ("_{" + ",".join(subs) + "}" if subs else "")


def _tex_lhs(var: str, kind: str) -> str:
    if kind == "map":
        return _tex_ident(var, "n+1")
    base, sub = _split_ident(var)
    return r"\dot{" + _tex_word(base) + "}" + ("_{" + _tex_word(sub) + "}" if sub else "")


def _tex_number(s: str) -> str:
    mant, _, ex = s.lower().partition("e")
    if mant.startswith("."):
        mant = "0" + mant
    if mant.endswith("."):
        mant = mant[:-1]
    if not ex:
        return mant
    e = str(int(ex))
    return f"10^{{{e}}}" if mant in ("1", "1.0") else rf"{mant} \cdot 10^{{{e}}}"


def _paren(s: str) -> str:
    return r"\left(" + s + r"\right)"


def _tex(n: Node, kind: str) -> str:
    if isinstance(n, Num):
        return _tex_number(n.text)
    if isinstance(n, Name):
        if n.role == "const":
            return r"\pi" if n.ref == "pi" else "e"
        if n.role == "var":
            return _tex_ident(n.ref, "n" if kind == "map" else "")
        return _tex_ident(n.name)
    if isinstance(n, Unary):
        s = _tex(n.operand, kind)
        return "-" + (_paren(s) if _prec(n.operand) <= 3 else s)
    if isinstance(n, Pow):
        b = _tex(n.base, kind)
        if _prec(n.base) < 5 or (isinstance(n.base, Num) and "10^" in b):
            b = _paren(b)
        return f"{b}^{{{_tex(n.exponent, kind)}}}"
    if isinstance(n, Call):
        args = [_tex(a, kind) for a in n.args]
        if n.func == "sqrt":
            return r"\sqrt{" + args[0] + "}"
        if n.func == "abs":
            return r"\left|" + args[0] + r"\right|"
        return FUNCTIONS[n.func].tex + _paren(", ".join(args))
    # Chain
    first = _tex(n.operands[0], kind)
    if n.ops[0] in "+-":
        out = _paren(first) if _prec(n.operands[0]) <= 1 else first
        for op, o in zip(n.ops, n.operands[1:]):
            s = _tex(o, kind)
            out += f" {op} " + (_paren(s) if _prec(o) <= 1 or isinstance(o, Unary) else s)
        return out
    raw = first
    wrapped = _paren(first) if _prec(n.operands[0]) <= 1 else first
    for op, o in zip(n.ops, n.operands[1:]):
        s = _tex(o, kind)
        if op == "/":
            raw = rf"\frac{{{raw}}}{{{s}}}"
        else:
            sw = _paren(s) if _prec(o) <= 3 else s
            sep = r" \cdot " if sw[:1].isdigit() or sw[:1] == "." else " "
            raw = wrapped + sep + sw
        wrapped = raw
    return raw


def _txt(n: Node) -> str:
    if isinstance(n, Num):
        return n.text
    if isinstance(n, Name):
        return n.name
    if isinstance(n, Unary):
        s = _txt(n.operand)
        return "-" + (f"({s})" if _prec(n.operand) < 4 else s)
    if isinstance(n, Pow):
        b, e = _txt(n.base), _txt(n.exponent)
        b = f"({b})" if _prec(n.base) < 5 else b
        e = f"({e})" if _prec(n.exponent) < 4 else e
        return f"{b}**{e}"
    if isinstance(n, Call):
        return f"{n.func}(" + ", ".join(_txt(a) for a in n.args) + ")"
    first = _txt(n.operands[0])
    lim = 1 if n.ops[0] in "+-" else 3
    out = f"({first})" if _prec(n.operands[0]) <= 1 else first
    for op, o in zip(n.ops, n.operands[1:]):
        s = _txt(o)
        out += (f" {op} " if lim == 1 else op) + (f"({s})" if _prec(o) <= lim else s)
    return out


def parse_param_assignments(text: str) -> dict[str, float]:
    """Parameter values typed beside custom equations: ``"a = 1, b = 2.5"`` (separated by
    commas, semicolons or new lines) -> ``{"a": 1.0, "b": 2.5}``. Names must be identifiers
    and values finite numbers, else :class:`ParameterError` says which entry is wrong."""
    out: dict[str, float] = {}
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ParameterError(f"parameter entry {part!r} must look like name = value")
        name, value = (s.strip() for s in part.split("=", 1))
        if not name.isidentifier():
            raise ParameterError(f"{name!r} is not a parameter name")
        try:
            v = float(value)
        except ValueError:
            raise ParameterError(f"value of {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(v):
            raise ParameterError(f"value of {name!r} must be finite, got {value!r}")
        out[name] = v
    return out


# ----------------------------------------------------------------------------- SDEs
_MAP_DRIFT = re.compile(r".*(_\{n\+1\}|\[n\+1\])\Z")


def _nodes(node: Node):
    """Every node of a syntax tree, depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Unary):
            stack.append(n.operand)
        elif isinstance(n, Pow):
            stack.extend((n.base, n.exponent))
        elif isinstance(n, Chain):
            stack.extend(n.operands)
        elif isinstance(n, Call):
            stack.extend(n.args)


def _tagged(e: EquationError, field: str) -> EquationError:
    """The error marked with the text it refers to (``.field``: ``"drift"`` or ``"diffusion"``)."""
    e.field = field  # type: ignore[attr-defined]
    return e


def _analyze_drift(text: Any, params: Mapping[str, Any] | None
                   ) -> tuple[ParsedEquations | None, list[EquationError], dict[str, float]]:
    """The drift of an SDE: flow equations, ``dx/dt = ...`` or ``x' = ...`` (here ``x'``
    means the drift, not a map's next state); ``x_{n+1}`` / ``x[n+1]`` are refused."""
    parsed, errors, values = _analyze(text, params)
    if parsed is not None and parsed.kind == "map":
        for eq in parsed.equations:
            if _MAP_DRIFT.match(eq.lhs):
                e = _err(f"{eq.lhs!r} at position {eq.position} is a map's next state; the "
                         f"drift of an SDE is written dx/dt = ... or x' = ...", eq.lhs,
                         eq.position)
                return None, [_located(e, text)], values
            for n in _nodes(eq.rhs):
                if isinstance(n, Name) and n.name != n.ref:
                    e = _err(f"{n.name!r} at position {n.pos} is map notation; in a drift write "
                             f"{n.ref!r}", n.name, n.pos)
                    return None, [_located(e, text)], values
        parsed = replace(parsed, kind="flow")
    return parsed, errors, values


def _analyze_diffusion(text: Any, variables: Sequence[str], params: Mapping[str, Any] | None
                       ) -> tuple[ParsedEquations | None, list[EquationError]]:
    """Parse the diffusion entries (the diagonal of D, one expression per variable, separated
    by commas, ';' or new lines) with the flow parser; ``params=None`` takes every unknown
    name as a parameter. Errors are located in the diffusion text."""
    if not isinstance(text, str):
        return None, [_err(f"diffusion must be text, got {type(text).__name__}", None, None)]
    if len(text) > MAX_CHARS:
        return None, [_err(f"diffusion is too long: {len(text)} characters at position "
                           f"{MAX_CHARS} (limit {MAX_CHARS})", text[MAX_CHARS:MAX_CHARS + 10],
                           MAX_CHARS)]
    # split on separators and on commas outside parentheses (atan2(y, x) stays one entry)
    entries: list[list[_Tok]] = [[]]
    seps: list[_Tok] = []
    depth = 0
    for t in _tokenize(text):
        if t.kind == "op" and t.text == "(":
            depth += 1
        elif t.kind == "op" and t.text == ")":
            depth = max(depth - 1, 0)
        if t.kind == "sep" and t.text == "\n" and not entries[-1]:
            continue                               # blank line, or a new line after ','
        if t.kind == "sep" or (t.kind == "op" and t.text == "," and depth == 0):
            entries.append([])
            seps.append(t)
            depth = 0
            continue
        entries[-1].append(t)
    while entries and not entries[-1] and (not seps or seps[-1].text != ","):
        entries.pop()                              # trailing new lines / ';'
        if seps:
            seps.pop()
    d = len(variables)
    names = ", ".join(variables)
    if not entries or all(not e for e in entries):
        return None, [_located(_err(f"no diffusion entries at position 0: give one expression "
                                    f"per variable ({names}), e.g. {', '.join(['0.5'] * d)}",
                                    "", 0), text)]
    for k, toks in enumerate(entries):
        if not toks:
            at = seps[k - 1] if k else seps[0]
            return None, [_located(_err(f"empty diffusion entry at position {at.pos} (one "
                                        f"expression per variable: {names})", at.text, at.pos),
                                   text)]
    if len(entries) != d:
        pos = seps[d - 1].pos if len(entries) > d else len(text)
        tok = seps[d - 1].text if len(entries) > d else ""
        return None, [_located(_err(f"diffusion needs one entry per variable ({names}): {d} "
                                    f"expected, got {len(entries)} (at position {pos})", tok, pos),
                               text)]
    var_index = {v: i for i, v in enumerate(variables)}
    errors: list[EquationError] = []
    equations: list[Equation] = []
    param_pos: dict[str, int] = {}
    funcs: dict[str, None] = {}
    consts: dict[str, None] = {}
    for k, (var, toks) in enumerate(zip(variables, entries)):
        before = seps[k - 1] if k else _Tok("sep", "", 0)
        try:
            for t in toks:
                if t.kind == "bad":
                    raise _err(f"{t.note}: {t.text!r} at position {t.pos}", t.text, t.pos)
                if t.kind == "op" and t.text == "=":
                    raise _err(f"unexpected '=' at position {t.pos}: diffusion entries are "
                               f"expressions (the diagonal of D), e.g. 0.5*x^2", "=", t.pos)
            parser = _Parser(toks, before, var_index, "flow")
            try:
                tree = parser.parse()
            except RecursionError:
                raise _err(f"expression is nested too deeply at position {toks[0].pos}",
                           toks[0].text, toks[0].pos) from None
            value = _compile(tree, var_index)
            if isinstance(value, float) and not value >= 0.0:
                raise _err(f"diffusion entry for {var!r} at position {toks[0].pos} is "
                           f"{value:g}; D must be >= 0 (the noise is sqrt(2 D))",
                           toks[0].text, toks[0].pos)
            src = " ".join(text[toks[0].pos:toks[-1].pos + len(toks[-1].text)].split())
            equations.append(Equation(var, f"D_{var}", tree, toks[0].pos, toks[0].pos, src))
            for key, pos in parser.params.items():
                param_pos.setdefault(key, pos)
            funcs.update(parser.functions)
            consts.update(parser.constants)
        except EquationError as e:
            errors.append(e)
    if params is not None:
        known = sorted(map(str, params))
        for key, pos in param_pos.items():
            if key in params:
                continue
            close = difflib.get_close_matches(key, [*known, *variables], n=1)
            dym = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(_err(f"unknown name {key!r} at position {pos}{dym} (variables: "
                               f"{names}; parameters: {', '.join(known) or 'none'}; "
                               f"functions: {_FUNC_LIST})", key, pos))
    errors.sort(key=_sort_key)
    if errors:
        return None, [_located(e, text) for e in errors]
    return ParsedEquations("flow", tuple(variables), tuple(equations), tuple(param_pos),
                           dict(param_pos), tuple(funcs), tuple(consts), text), []


def validate_sde(drift_text: str, diffusion_text: str,
                 params: Mapping[str, Any] | None = None) -> list[EquationError]:
    """Every error found in an SDE's drift and diffusion texts, drift first (each error's
    ``.field`` says which text it locates); ``[]`` when both are fine. Never raises.
    ``params=None`` takes undeclared names as parameters (check-as-you-type)."""
    parsed, errors, values = _analyze_drift(drift_text, params)
    errors = [_tagged(e, "drift") for e in errors]
    if parsed is not None:
        dparsed, derr = _analyze_diffusion(diffusion_text, parsed.variables, params)
        errors += [_tagged(e, "diffusion") for e in derr]
        if dparsed is not None and params is not None and not errors:
            errors += _sign_errors(dparsed, values)
    return errors


def _sign_errors(dparsed: ParsedEquations, values: Mapping[str, float]) -> list[EquationError]:
    """An error for each parameter-only diffusion entry that is negative (or NaN) at these
    parameter values, located in the diffusion text."""
    state_free = [i for i, eq in enumerate(dparsed.equations) if not _uses_var(eq.rhs)]
    out = []
    for i, v in _negative_entries(dparsed.compile(), state_free, len(dparsed.variables), values):
        eq = dparsed.equations[i]
        e = _err(f"diffusion entry for {eq.variable!r} at position {eq.position} ({eq.source}) "
                 f"is {v:g} at these parameters; D must be >= 0 (the noise is sqrt(2 D))",
                 eq.source, eq.position)
        out.append(_tagged(_located(e, dparsed.text), "diffusion"))
    return out


class _CustomSDE(_CustomSystem, SDE):
    """Shared behaviour of the per-call SDE classes built by :func:`parse_sde`: the drift as
    for custom flows, ``g_i = sqrt(2 max(D_i, 0))`` from the compiled diffusion entries."""

    diffusion_equations: ParsedEquations
    diffusion_source: str = ""
    _diffusion_program: _Program
    _state_free: tuple[int, ...] = ()

    def __init__(self, **params: Any):
        super().__init__(**params)
        bad = _negative_entries(self._diffusion_program, self._state_free, self.dim, self.params)
        if bad:
            i, v = bad[0]
            eq = self.diffusion_equations.equations[i]
            raise ParameterError(f"{self.title}: diffusion entry D_{eq.variable} = {eq.source} "
                                 f"is {v:g} at these parameters; D must be >= 0")

    def diffusion(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        return torch.sqrt(2.0 * self._diffusion_program(x, p).clamp_min(0.0))

    def diffusion_derivative(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        """``dg_i/dx_i = (dD_i/dx_i) / g_i`` (0 where ``g_i = 0``), ``D_i`` by autograd."""
        prog = self._diffusion_program
        shapes = [p[k].shape for k in prog.param_names if isinstance(p[k], torch.Tensor)]
        batch = torch.broadcast_shapes(x.shape[:-1], *shapes)
        if self.additive:
            return x.new_zeros(*batch, self.dim)
        if batch != x.shape[:-1]:
            x = x.expand(*batch, x.shape[-1]).contiguous()
        dD = torch.diagonal(autodiff_jacobian(lambda z: prog(z, p), x), dim1=-2, dim2=-1)
        g = self.diffusion(x, p)
        return torch.where(g > 0, dD / torch.where(g > 0, g, torch.ones_like(g)),
                           torch.zeros_like(g))

    def drift_system(self) -> DynamicalSystem:
        """The drift as a custom :class:`~explorer.core.system.Flow` with the same parameters
        (those only the diffusion uses are kept, unused)."""
        spec = self._spec
        flow = parse_system(self.equations.canonical(), spec["params"],
                            name=f"{self.name}_drift", x0=spec["x0"], dt=spec["dt"])
        return type(flow)(**self.params)

    def __reduce__(self):
        return (_rebuild_sde, (dict(self._spec), dict(self.params)))


def _negative_entries(prog: _Program, state_free: Sequence[int], dim: int,
                      params: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(index, smallest value) of the state-free diffusion entries that are negative or NaN at
    these parameter values (state-dependent entries are clamped at 0 instead)."""
    if not state_free:
        return []
    vals = prog(torch.zeros(1, dim, dtype=torch.float64), params)        # (..., D)
    out = []
    for i in state_free:
        v = vals[..., i]
        bad = v[~(v >= 0)]
        if bad.numel():
            out.append((i, math.nan if torch.isnan(bad).all() else float(bad.nan_to_num(0.0).min())))
    return out


def _rebuild_sde(spec: dict[str, Any], params: dict[str, Any]) -> DynamicalSystem:
    return type(parse_sde(**spec))(**params)


def parse_sde(drift_text: str, diffusion_text: str, params: Mapping[str, float] | None = None,
              *, name: str = "custom_sde", x0: Sequence[float] | None = None,
              dt: float | None = None) -> SDE:
    r"""Build an Itô :class:`~explorer.core.system.SDE` with diagonal noise from text.

    :math:`dX_i = f_i(X)\,dt + \sqrt{2 D_i(X)}\,dW_i`: the generator's diffusion matrix is
    :math:`D = g g^T / 2 = \mathrm{diag}(D_1, \dots, D_n)`.

    Args:
        drift_text: the drift in the syntax of custom flows, ``dx/dt = ...`` or ``x' = ...``
            (both mean the drift here); map notation (``x_{n+1}``) is refused.
        diffusion_text: the diagonal of ``D``: one expression per variable, in the drift's
            variable order, separated by commas (or ``;``/new lines), e.g. ``"T, T"`` or
            ``"0.5*x^2, s"``. Same grammar, names and functions as the drift. A constant or
            parameter-only entry must be >= 0 (else :class:`EquationError` here,
            :class:`~explorer.core.errors.ParameterError` from ``with_params``); an entry
            that depends on the state is clamped at 0 where it is negative.
        params: ``{name: value}`` for every parameter of the drift and the diffusion.
        name, x0, dt: as for :func:`parse_system` (``dt`` default 0.01).

    Returns an instance of a class built for this call: batched, any dtype/device, tensor
    parameter sweeps, ``with_params``, pickling, autograd Jacobian of the drift, Milstein's
    derivative by autograd. ``additive`` is True when no entry uses a variable.
    Raises :class:`EquationError` (``.field`` is ``"drift"`` or ``"diffusion"``) on the
    first problem; positions refer to the text named by ``.field``.
    """
    parsed, errors, values = _analyze_drift(drift_text, {} if params is None else params)
    if errors:
        raise _tagged(errors[0], "drift")
    assert parsed is not None
    dparsed, derr = _analyze_diffusion(diffusion_text, parsed.variables,
                                       {} if params is None else params)
    if derr:
        raise _tagged(derr[0], "diffusion")
    assert dparsed is not None
    x0t, dtv = _sde_x0_dt(parsed.variables, x0, dt, name)
    cls = _build_sde_class(parsed, dparsed, values, name, x0t, dtv,
                           {"drift_text": drift_text, "diffusion_text": diffusion_text,
                            "params": dict(values), "name": name, "x0": x0t, "dt": dtv})
    bad = _sign_errors(dparsed, values)
    if bad:
        raise bad[0]
    return cls()


def _sde_x0_dt(variables: Sequence[str], x0: Any, dt: Any, name: Any
               ) -> tuple[tuple[float, ...], float]:
    """Checked default initial condition and time step (as in :func:`parse_system`)."""
    d = len(variables)
    if x0 is None:
        x0t = generic_x0(d)
    else:
        try:
            if isinstance(x0, (str, bytes)):
                raise TypeError
            x0t = tuple(float(v) for v in x0)
        except (TypeError, ValueError):
            raise _err(f"x0 must be {d} numbers, got {_show(x0)}", None, None) from None
        if len(x0t) != d or not all(math.isfinite(v) for v in x0t):
            raise _err(f"x0 must be {d} finite numbers (one per variable: "
                       f"{', '.join(variables)}), got {_show(x0)}", None, None)
    dtv = 0.01 if dt is None else _number(dt)
    if dtv is None or not math.isfinite(dtv) or dtv <= 0:
        raise _err(f"dt must be a positive number, got {_show(dt)}", None, None)
    if not isinstance(name, str) or not name.strip():
        raise _err(f"name must be a non-empty string, got {_show(name)}", None, None)
    return x0t, float(dtv)


def _build_sde_class(parsed: ParsedEquations, dparsed: ParsedEquations,
                     values: Mapping[str, float], name: str, x0: tuple[float, ...], dt: float,
                     spec: dict[str, Any]) -> type[SDE]:
    used = set(parsed.parameters) | set(dparsed.parameters)
    params = []
    for k, v in values.items():
        bound = max(PARAM_BOUND, 10.0 * abs(v))
        doc = f"user parameter {k}" + ("" if k in used else " (not used by the equations)")
        params.append(Param(k, v, -bound, bound, doc))
    dprog = dparsed.compile()
    state_free = tuple(i for i, eq in enumerate(dparsed.equations) if not _uses_var(eq.rhs))
    additive = len(state_free) == len(dparsed.equations)
    lines = []
    for k, (eq, deq) in enumerate(zip(parsed.equations, dparsed.equations)):
        v = _tex_ident(eq.variable)
        lines.append(rf"d{v} = {_paren(_tex(eq.rhs, 'flow'))}\, dt + "
                     rf"\sqrt{{2 {_paren(_tex(deq.rhs, 'flow'))}}}\, dW_{{{k + 1}}}")
    pv = ", ".join(f"{k} = {v:g}" for k, v in values.items())
    drift = "; ".join(eq.source for eq in parsed.equations)
    diff = ", ".join(eq.source for eq in dparsed.equations)
    description = (f"Custom SDE entered as equations. Drift: {drift}. Diffusion D (noise "
                   f"sqrt(2 D)): {diff}" + (f". Parameters: {pv}." if pv else "."))
    attrs = {
        "__module__": __name__,
        "__doc__": f"Custom SDE: drift {drift}; diffusion {diff}",
        "name": name,
        "title": "Custom SDE",
        "variables": parsed.variables,
        "parameters": tuple(params),
        "default_x0": x0,
        "default_dt": dt,
        "latex": r" \\ ".join(lines),
        "description": description,
        "origin": "custom",
        "additive": additive,
        "equations": parsed,
        "diffusion_equations": dparsed,
        "source": parsed.text,
        "diffusion_source": dparsed.text,
        "_program": parsed.compile(),
        "_diffusion_program": dprog,
        "_state_free": state_free,
        "_spec": spec,
    }
    return type("CustomSDE", (_CustomSDE,), attrs)
