"""`edge-llm chat`: an interactive, streaming conversation (or one per stdin line when piped)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edge_llm.cli import options as o

HELP = """commands:
  /system TEXT   set the system message (and start over)
  /reset         forget the conversation
  /stats         usage and speed of the last reply
  /save FILE     save the conversation and its KV cache
  /load FILE     continue a saved conversation
  /help          this list
  /exit          quit (also /quit, /bye, Ctrl-D)"""


def chat(
    model: o.Model = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="System message.", show_default=False)
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", "-n", help="Most tokens per reply.")
    ] = 512,
    temperature: o.Temperature = None,
    top_k: o.TopK = None,
    top_p: o.TopP = None,
    min_p: o.MinP = None,
    repeat_penalty: o.RepeatPenalty = None,
    seed: o.Seed = None,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    device: o.Device = "auto",
) -> None:
    """Chat with a model. Type a message, or a /command (/help lists them).

    When stdin is not a terminal, each line is one user message and only the replies are
    printed: echo "What is 12*7?" | edge-llm chat
    """
    from edge_llm.cli.run import format_stats
    from edge_llm.errors import EdgeLLMError
    from edge_llm.model import load

    params = o.sampling(
        max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repeat_penalty=repeat_penalty, seed=seed,
    )  # fmt: skip
    m = load(model, device=device, n_ctx=ctx, threads=threads)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    note = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        note(f"{m.name} ({m.architecture}, context {m.n_ctx}). /help for commands, /exit to quit.")
        if not m.has_chat_template:
            note("note: this model has no chat template (a base model?); using ChatML")
    conv = Conversation(system)
    last = None
    while True:
        line = _read(interactive)
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            if cmd in ("/exit", "/quit", "/bye"):
                break
            if cmd == "/reset":
                conv.reset()
                m.reset()
                note("(conversation cleared)")
            elif cmd == "/system":
                conv = Conversation(arg.strip() or None)
                note(
                    f"(system message {'set' if arg.strip() else 'cleared'}; conversation cleared)"
                )
            elif cmd == "/stats":
                note(format_stats(last) if last else "(no reply yet)")
            elif cmd in ("/save", "/load") and not arg.strip():
                note(f"{cmd} needs a file name")
            elif cmd == "/save":
                m.save_session(arg.strip(), messages=conv.messages, system=conv.system)
                note(f"(saved {len(conv.messages)} messages to {arg.strip()})")
            elif cmd == "/load":
                try:
                    header = m.load_session(arg.strip())
                except EdgeLLMError as e:
                    note(f"error: {e}")
                    continue
                conv = Conversation(header.get("system"))
                conv.messages = list(header.get("messages", conv.messages))
                note(f"(loaded {len(conv.messages)} messages from {arg.strip()})")
            elif cmd == "/help":
                note(HELP)
            else:
                note(f"unknown command {cmd}; /help lists the commands")
            continue
        conv.add("user", text)
        try:
            dropped = conv.fit(m, reserve=min(max_tokens, m.n_ctx // 4))
            if dropped:
                note(f"(context full: dropped the {dropped} oldest messages)")
            stream = m.chat_stream(conv.messages, **params)
        except EdgeLLMError as e:
            conv.messages.pop()
            if not interactive:
                raise
            note(f"error: {e}")
            continue
        reply = []
        try:
            for piece in stream:
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            note("\n(interrupted)")
        else:
            last = stream.result
        sys.stdout.write("\n")
        sys.stdout.flush()
        conv.add("assistant", "".join(reply))


def _read(interactive: bool) -> str | None:
    if interactive:
        try:
            return input(">>> ")
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
