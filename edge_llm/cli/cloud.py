"""The cascade's options, shared by `run`, `chat` and `serve`: a cloud behind the device model.

Why its own module: three commands take the same seven options and turn them into the same
``edge_llm.Cascade``; declaring them once, as one ``Options`` group, keeps their help and checks
the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

Cloud = Annotated[
    str | None,
    typer.Option(
        "--cloud",
        help="An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8081/v1) that answers what the "
        "device model is unsure of. Without it everything runs on this device.",
        show_default=False,
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
CloudModel = Annotated[
    str | None,
    typer.Option(
        "--cloud-model",
        help="The model name the cloud serves (needed with --cloud).",
        show_default=False,
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
CloudKeyEnv = Annotated[
    str,
    typer.Option(
        "--cloud-key-env",
        help="The environment variable holding the cloud's API key (never the key itself; no "
        "key is sent when it is unset).",
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
EscalateRate = Annotated[
    float | None,
    typer.Option(
        "--escalate-rate",
        min=0.0,
        max=1.0,
        help="Send this share of answers (the least confident) to the cloud: from the router's "
        "calibration with --router, else ranked among the last 256 answers.",
        show_default=False,
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
RouterFile = Annotated[
    str | None,
    typer.Option(
        "--router",
        help="A router JSON fitted for this model (scripts/cascade_bench.py --save-router); "
        "default: escalate when the answer's mean token log-probability is below log(0.5).",
        show_default=False,
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
LocalOnly = Annotated[
    bool,
    typer.Option(
        "--local-only",
        help="Nothing leaves this device: the cloud is never contacted.",
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
CloudTimeout = Annotated[
    float,
    typer.Option(
        "--cloud-timeout",
        min=0.1,
        help="Seconds one escalation may take, retries included; then the device answers.",
        rich_help_panel="Cloud (edge-cloud cascade)",
    ),
]
DEFAULT_KEY_ENV = "EDGE_LLM_CLOUD_KEY"


@dataclass(frozen=True)
class Options:
    """The cascade's options as one value: a command takes ``cloud: Options`` and
    ``options.grouped`` puts the options themselves on its command line."""

    cloud: Cloud = None
    cloud_model: CloudModel = None
    cloud_key_env: CloudKeyEnv = DEFAULT_KEY_ENV
    escalate_rate: EscalateRate = None
    router: RouterFile = None
    local_only: LocalOnly = False
    cloud_timeout: CloudTimeout = 30.0

    def wrap(self, model: Any) -> Any:
        """``model`` itself when no cloud is asked for, else a Cascade over it."""
        from edge_llm.errors import ConfigError

        if self.cloud is None:
            if self.cloud_model or self.router or self.escalate_rate is not None:
                raise ConfigError("--cloud-model, --router and --escalate-rate need --cloud URL")
            return model
        if not self.cloud_model:
            raise ConfigError("--cloud needs --cloud-model NAME: the model the endpoint serves")
        from edge_llm.cascade import Cascade, CloudConfig

        config = CloudConfig(
            self.cloud,
            self.cloud_model,
            api_key_env=self.cloud_key_env,
            timeout_s=self.cloud_timeout,
        )
        return Cascade(
            model,
            config,
            router=self.router,
            escalate_rate=self.escalate_rate,
            local_only=self.local_only,
        )


DEVICE_ONLY = Options()  # no --cloud: everything runs on this device


def marker(result: Any) -> str | None:
    """The line chat shows before a cloud answer (None for a device answer)."""
    return "[cloud]" if getattr(result, "answered_by", None) == "cloud" else None


def note(result: Any) -> None:
    """One stderr line saying who answered (a cascade's answers only)."""
    import sys

    info = getattr(result, "cascade_info", None)
    if info is None:
        return
    d = info()
    if d["answered_by"] == "cloud":
        print("(answered by the cloud)", file=sys.stderr)
    elif d.get("cloud_error"):
        print(
            f"(the cloud failed: {d['cloud_error']}; this is the device's answer)", file=sys.stderr
        )
