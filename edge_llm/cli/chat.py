"""`edge-llm chat`: an interactive, streaming conversation (or one per stdin line when piped)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edge_llm.cli import cloud as c
from edge_llm.cli import options as o
from edge_llm.cli.pull import Yes
from edge_llm.cli.report import format_stats, length_notice

HELP = """commands:
  \"\"\"            begin (and end) a message of several lines
  /set NAME VALUE  change a sampling option: temperature, top_k, top_p, min_p,
                 repeat_penalty, seed, max_tokens (/set alone lists them)
  /system TEXT   set the system message (and start over)
  /adapter NAME  apply a LoRA adapter given with --adapter (none: the base alone;
                 /adapter alone lists them)
  /reset         forget the conversation
  /stats         usage and speed of the last reply
  /save FILE     save the conversation and its KV cache
  /load FILE     continue a saved conversation
  /help          this list
  /exit          quit (also /quit, /bye, Ctrl-D)"""


@o.grouped
def chat(
    model: o.Model = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="System message.", show_default=False)
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", "-n", help="Most tokens per reply.")
    ] = 512,
    sampling: o.Sampling = o.NO_SAMPLING,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    where: o.Where = o.AUTO,
    adapter: o.Adapters = None,
    yes: Yes = False,
    cloud: c.Options = c.DEVICE_ONLY,
) -> None:
    """Chat with a model. Type a message, or a /command (/help lists them).

    When stdin is not a terminal, each line is one user message and only the replies are
    printed: echo "What is 12*7?" | edge-llm chat

    With --adapter NAME=PATH (repeatable) the first adapter is applied; /adapter NAME switches
    (the base stays loaded).
    """
    from edge_llm.cli.pull import ensure_model
    from edge_llm.model import load

    settings = o.sampling(max_tokens, sampling)
    model = ensure_model(model, yes)
    m = load(model, n_ctx=ctx, threads=threads, adapters=o.adapters(adapter), **where.load_kwargs())
    m.use(next(iter(m.adapters), None))
    m = cloud.wrap(m)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        _note(f"{m.name} ({m.architecture}, context {m.n_ctx}). /help for commands, /exit to quit.")
    if m.chat_format.notice(m.name):
        _note(m.chat_format.notice(m.name))
    Session(m, system, settings, interactive).loop()


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Session:
    """One chat: the model, the conversation so far, the sampling settings (/set changes them)
    and the last reply's result (/stats shows it)."""

    def __init__(self, m, system: str | None, settings: dict, interactive: bool) -> None:
        self.m = m
        self.conv = Conversation(system)
        self.settings = settings
        self.interactive = interactive
        self.last = None

    def loop(self) -> None:
        """Read messages and /commands until the end of input or /exit."""
        while True:
            line = _read(self.interactive)
            if line is None:
                return
            text = line.strip()
            if text.startswith('"""'):
                text = _read_block(text[3:], self.interactive)
                if text is None:
                    return
                if not text.strip():
                    continue
            elif not text:
                continue
            elif text.startswith("/"):
                if not self.command(text):
                    return
                continue
            self.reply(text)

    def command(self, text: str) -> bool:
        """Do a /command; False when it ends the chat."""
        from edge_llm.errors import EdgeLLMError

        m, conv = self.m, self.conv
        cmd, _, arg = text.partition(" ")
        if cmd in ("/exit", "/quit", "/bye"):
            return False
        if cmd == "/reset":
            conv.reset()
            m.reset()
            _note("(conversation cleared)")
        elif cmd == "/system":
            self.conv = Conversation(arg.strip() or None)
            _note(f"(system message {'set' if arg.strip() else 'cleared'}; conversation cleared)")
        elif cmd == "/adapter":
            _note(_adapter(m, arg.strip()))
        elif cmd == "/stats":
            _note(format_stats(self.last) if self.last else "(no reply yet)")
        elif cmd in ("/save", "/load") and not arg.strip():
            _note(f"{cmd} needs a file name")
        elif cmd == "/save":
            m.save_session(arg.strip(), messages=conv.messages, system=conv.system)
            _note(f"(saved {len(conv.messages)} messages to {arg.strip()})")
        elif cmd == "/load":
            try:
                header = m.load_session(arg.strip())
            except EdgeLLMError as e:
                _note(f"error: {e}")
                return True
            self.conv = Conversation(header.get("system"))
            self.conv.messages = list(header.get("messages", self.conv.messages))
            _note(f"(loaded {len(self.conv.messages)} messages from {arg.strip()})")
        elif cmd == "/set":
            _note(_set(self.settings, arg))
        elif cmd == "/help":
            _note(HELP)
        else:
            _note(f"unknown command {cmd}; /help lists the commands")
        return True

    def reply(self, text: str) -> None:
        """Answer the user's ``text``, streaming the reply; Ctrl-C stops it."""
        from edge_llm.errors import EdgeLLMError

        m, conv, settings = self.m, self.conv, self.settings
        conv.add("user", text)
        try:
            dropped = conv.fit(m, reserve=min(settings["max_tokens"], m.n_ctx // 4))
            if dropped:
                _note(f"(context full: dropped the {dropped} oldest messages)")
            stream = m.chat_stream(conv.messages, **settings)
        except EdgeLLMError as e:
            conv.messages.pop()
            if not self.interactive:
                raise
            _note(f"error: {e}")
            return
        reply = []
        try:
            for piece in stream:
                if not reply and c.marker(stream) and self.interactive:
                    sys.stdout.write(c.marker(stream) + " ")
                elif not reply and c.marker(stream):
                    _note(c.marker(stream))  # piped: stdout holds the replies alone
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            _note("\n(interrupted)")
        else:
            self.last = stream.result
        sys.stdout.write("\n")
        sys.stdout.flush()
        conv.add("assistant", "".join(reply))
        last = self.last
        if last is not None and last is stream.result and getattr(last, "cloud_error", None):
            _note(f"(the cloud failed: {last.cloud_error}; this is the device's answer)")
        if last is not None and last is stream.result and last.finish_reason == "length":
            _note(length_notice(last, settings["max_tokens"], m.n_ctx))


def _adapter(m, name: str) -> str:
    """Apply `/adapter NAME` (none: the base alone); the line to show."""
    if not m.adapters:
        return "no adapters: start chat with --adapter NAME=PATH"
    if not name:
        shown = [f"{'*' if n == m.adapter else ' '} {n} ({a.path})" for n, a in m.adapters.items()]
        return "\n".join([*shown, f"{'*' if m.adapter is None else ' '} none (the base alone)"])
    choice = None if name.lower() == "none" else name
    if choice is not None and choice not in m.adapters:
        return f"no adapter {name!r}; loaded: {', '.join(m.adapters)} (or none)"
    m.use(choice)
    return f"(adapter {name} applied)"


SETTABLE = {
    "temperature": float,
    "temp": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "seed": int,
    "max_tokens": int,
}


def _set(settings: dict, arg: str) -> str:
    """Apply `/set NAME VALUE` to ``settings``; the line to show."""
    from edge_llm.errors import ConfigError
    from edge_llm.sampling import SamplingParams

    parts = arg.split()
    if not parts:
        p = SamplingParams.from_kwargs(**settings)
        names = [n for n in SETTABLE if n != "temp"]
        return "  ".join(f"{n}={getattr(p, n)}" for n in names)
    name = parts[0].lower().replace("-", "_")
    if name not in SETTABLE or len(parts) != 2:
        return (
            f"usage: /set NAME VALUE, NAME one of {', '.join(n for n in SETTABLE if n != 'temp')}"
        )
    name = "temperature" if name == "temp" else name
    try:
        value = SETTABLE[name](parts[1])
        SamplingParams.from_kwargs(**{**settings, name: value})
    except ValueError:
        return f"error: {name} takes a number, not {parts[1]!r}"
    except ConfigError as e:
        return f"error: {e}"
    settings[name] = value
    return f"({name} = {value})"


def _read_block(first: str, interactive: bool) -> str | None:
    """The lines of a \"\"\" ... \"\"\" message (``first``: what followed the opening quotes)."""
    if first.rstrip().endswith('"""'):
        return first.rstrip()[:-3]
    lines = [first] if first else []
    while True:
        line = _read(interactive, prompt="... ")
        if line is None:
            return "\n".join(lines) if lines else None
        line = line.rstrip("\n")
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n")
        lines.append(line)


def _read(interactive: bool, prompt: str = ">>> ") -> str | None:
    if interactive:
        try:
            return input(prompt)
        except EOFError:
            print(file=sys.stderr)
            return None
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return None
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line if line else None


class Conversation:
    """The messages so far, with the system message kept when old turns are dropped."""

    def __init__(self, system: str | None):
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def add(self, role: str, content: str) -> None:
        self.messages.append({"role": role, "content": content})

    def fit(self, model, reserve: int) -> int:
        """Drop the oldest turns until the prompt plus ``reserve`` tokens fits the context."""
        first = 1 if self.system else 0
        dropped = 0
        while len(model.chat_tokens(self.messages)) + reserve > model.n_ctx:
            if len(self.messages) - first <= 1:
                break  # only the new message is left: let generation report it
            del self.messages[first]
            dropped += 1
        return dropped
