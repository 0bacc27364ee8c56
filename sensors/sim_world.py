"""The synthetic world's script: event classes, scenarios and the ground-truth timeline.

Pure data and numpy (``runtime`` types only; never torch, never a device library).
Sensor rig: the IMU is a wearable on the person in the scene (as Ego4D's head IMU);
depth, thermal, RGB cameras and the microphone sit on a robot at 0.8 m, looking into a room.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from runtime.errors import ConfigError
from runtime.types import Modality

_A, _D, _I, _T, _V = Modality.AUDIO, Modality.DEPTH, Modality.IMU, Modality.THERMAL, Modality.VISION
GAP_CAPTION = "a quiet room"  # caption while no event is active


@dataclass(frozen=True)
class EventClass:
    """One kind of event and where it shows.

    Attributes:
        label: short name, e.g. ``"fall"``; also the name of its single-event scenario.
        caption: what the caption stream says while it is active.
        modalities: sensor modalities carrying its signature (the caption always carries it).
        signature: one line saying what each modality shows.
    """

    label: str
    caption: str
    modalities: tuple[Modality, ...]
    signature: str


EVENT_CLASSES: tuple[EventClass, ...] = (
    EventClass("empty", "an empty room", (_A, _D, _T, _V, _I),
               "noise floor only; room background in depth/thermal/RGB; IMU at rest (1 g)"),
    EventClass("walking", "a person walks across the room", (_I, _A, _D, _T, _V),
               "IMU ~1.9 Hz gait (0.35 g); footstep thumps; warm 305 K person crossing at 3 m"),
    EventClass("running", "a person runs across the room", (_I, _A, _D, _T, _V),
               "IMU ~2.8 Hz gait (1.2 g, impacts); loud footsteps; fast-crossing warm person"),
    EventClass("fall", "a person falls down", (_I, _A, _D, _T, _V),
               "IMU free fall (0.15 g), >5 g impact, lying still; thud; warm body lying on the floor"),
    EventClass("speech", "a person is talking", (_A, _D, _T, _V),
               "formant-shaped voiced syllables at ~4 Hz (f0 100-220 Hz); standing person"),
    EventClass("door_knock", "someone knocks on a door", (_A, _V),
               "groups of three damped 150/420 Hz knocks every 2.5 s; a door on the back wall in RGB"),
    EventClass("alarm", "a smoke alarm is beeping", (_A, _V),
               "3.1 kHz tone in the T3 pattern (0.5 s on/off x3, 1.5 s pause); a red strobe in RGB"),
    EventClass("glass_break", "glass breaks", (_A, _V),
               "broadband crash, ringing 2.5-7 kHz partials, then tinkling fragments; a smashed pane in RGB"),
    EventClass("engine", "an engine is running", (_A, _I, _T, _D, _V),
               "25-40 Hz harmonic hum + rumble; 30 Hz vibration on the IMU; warm 340 K machine"),
    EventClass("fire", "a fire is burning", (_T, _A, _V),
               "600-720 K flickering hot region; crackle impulses and rumble; orange flicker in RGB"),
    EventClass("approach", "a person walks towards the robot", (_D, _T, _V, _A, _I),
               "person 5 m -> 0.8 m: depth falling, warm blob growing; gait; louder footsteps"),
    EventClass("obstacle", "an obstacle is ahead", (_D, _V),
               "box at ambient temperature closing from 3 m to 0.4 m in depth and RGB"),
)  # fmt: skip
CLASS_BY_LABEL = MappingProxyType({c.label: c for c in EVENT_CLASSES})

# scenario -> (cycle_s, ((label, start_s, end_s), ...)); the script repeats every cycle_s
_DEMO_ORDER = ("empty", "walking", "running", "fall", "speech", "door_knock", "alarm",
               "glass_break", "engine", "fire", "approach", "obstacle")  # fmt: skip
_SLOT_S = 5.0
_SCRIPTS = MappingProxyType(
    {
        "demo": (_SLOT_S * len(_DEMO_ORDER),
                 tuple((lab, i * _SLOT_S + 0.25, (i + 1) * _SLOT_S - 0.25) for i, lab in enumerate(_DEMO_ORDER))),
        "fall": (10.0, (("walking", 1.0, 4.0), ("fall", 4.0, 9.0))),
        **{c.label: (10.0, ((c.label, 2.0, 8.0),)) for c in EVENT_CLASSES if c.label != "fall"},
    }
)  # fmt: skip
RANDOM = "random"
SCENARIOS: tuple[str, ...] = (*_SCRIPTS, RANDOM)
_MIN_EVENT_S = {"fall": 2.0, "glass_break": 2.0, "door_knock": 2.0}


@dataclass(frozen=True)
class Event:
    """One ground-truth event.

    Attributes:
        label: its :class:`EventClass` label.
        start_s: start, seconds from the start of the streams (the sim clock).
        end_s: end (exclusive), seconds.
        modalities: modalities carrying it.
        caption: its caption.
        seed: seeds this event's own parameters (position, gait rate, voice pitch, ...).
    """

    label: str
    start_s: float
    end_s: float
    modalities: tuple[Modality, ...]
    caption: str
    seed: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (modalities as their names)."""
        return {
            "label": self.label,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "modalities": [m.value for m in self.modalities],
            "caption": self.caption,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class EventParams:
    """Per-event random parameters, drawn from ``Event.seed`` (so every modality agrees).

    Attributes:
        step_hz: gait step rate, Hz.
        x_m: lateral position of the person/object, metres (camera right positive).
        z_m: distance from the cameras, metres.
        f0_hz: voice pitch (speech) or engine firing rate, Hz.
        level: loudness/strength factor around 1.
        shirt_rgb: the person's shirt colour, 8-bit RGB.
    """

    step_hz: float
    x_m: float
    z_m: float
    f0_hz: float
    level: float
    shirt_rgb: tuple[int, int, int]


def event_params(event: Event) -> EventParams:
    """Draw ``event``'s parameters (deterministic in ``event.seed``)."""
    rng = np.random.default_rng(event.seed)
    u = rng.random(6)
    base_step = {"running": 2.8}.get(event.label, 1.9)
    base_f0 = {"engine": 30.0}.get(event.label, 160.0)
    shirt = tuple(int(c) for c in rng.integers(30, 230, 3))
    return EventParams(
        step_hz=base_step * (0.93 + 0.14 * u[0]),
        x_m=-1.0 + 2.0 * u[1],
        z_m=2.5 + 1.0 * u[2],
        f0_hz=base_f0 * (0.7 + 0.6 * u[3]),
        level=0.8 + 0.4 * u[4],
        shirt_rgb=(shirt[0], shirt[1], shirt[2]),
    )


def default_duration_s(scenario: str) -> float:
    """The scenario's natural length: one cycle of its script (60 s for ``random``)."""
    check_scenario(scenario)
    return 60.0 if scenario == RANDOM else _SCRIPTS[scenario][0]


def check_scenario(scenario: str) -> None:
    """Raise ConfigError listing the valid scenarios if ``scenario`` is unknown."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown sim scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")


def build_timeline(scenario: str, seed: int, duration_s: float) -> tuple[Event, ...]:
    """The ground-truth events of ``scenario`` over ``[0, duration_s)`` seconds, in start order.

    Scripted scenarios repeat their script every cycle and cut the last events at
    ``duration_s``; ``random`` draws a seeded schedule of classes, lengths and gaps.

    Raises:
        ConfigError: unknown scenario or a non-positive duration.
    """
    check_scenario(scenario)
    if not duration_s > 0:
        raise ConfigError(f"sim duration_s must be > 0, got {duration_s}")
    spans = _random_spans(seed, duration_s) if scenario == RANDOM else _scripted_spans(scenario, duration_s)
    events = []
    for i, (label, start_s, end_s) in enumerate(spans):
        cls = CLASS_BY_LABEL[label]
        ev_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        events.append(Event(label, round(start_s, 6), round(min(end_s, duration_s), 6), cls.modalities, cls.caption,
                            ev_seed))  # fmt: skip
    return tuple(events)


def _scripted_spans(scenario: str, duration_s: float) -> list[tuple[str, float, float]]:
    cycle_s, script = _SCRIPTS[scenario]
    spans = []
    for k in range(math.ceil(duration_s / cycle_s)):
        for label, start_s, end_s in script:
            if k * cycle_s + start_s < duration_s:
                spans.append((label, k * cycle_s + start_s, k * cycle_s + end_s))
    return spans


def _random_spans(seed: int, duration_s: float) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng([seed, 0x51D])
    spans, t_s = [], float(rng.uniform(0.2, 1.0))
    while t_s < duration_s:
        label = EVENT_CLASSES[int(rng.integers(len(EVENT_CLASSES)))].label
        length_s = max(float(rng.uniform(3.0, 8.0)), _MIN_EVENT_S.get(label, 0.0))
        spans.append((label, t_s, t_s + length_s))
        t_s += length_s + float(rng.uniform(0.3, 1.5))
    return spans


def overlapping(timeline: tuple[Event, ...], t0_s: float, t1_s: float) -> list[Event]:
    """Events overlapping ``[t0_s, t1_s)``."""
    return [e for e in timeline if e.start_s < t1_s and e.end_s > t0_s]


def caption_at(timeline: tuple[Event, ...], t_s: float) -> str:
    """The caption at ``t_s`` seconds: active events' captions joined by ``" and "``."""
    active = [e.caption for e in timeline if e.start_s <= t_s < e.end_s]
    return " and ".join(active) if active else GAP_CAPTION


def timeline_to_json(timeline: tuple[Event, ...], t0_ns: int | None = None) -> str:
    """JSON list of the events; with ``t0_ns`` (host time of sample 0) also ``start_ns``/``end_ns``."""
    rows = []
    for e in timeline:
        row = e.to_dict()
        if t0_ns is not None:
            row |= {"start_ns": t0_ns + round(e.start_s * 1e9), "end_ns": t0_ns + round(e.end_s * 1e9)}
        rows.append(row)
    return json.dumps(rows)
