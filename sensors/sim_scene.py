"""The synthetic room seen by pinhole cameras: objects over time, clean depth/thermal/RGB renders.

numpy + :mod:`sensors.sim_world` only. Sensor noise is added by :mod:`sensors.sim_signals`.
Coordinates: x right, z forward from the camera (metres), heights above the floor (metres).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sensors.sim_world import Event, event_params

WALL_M = 5.0  # back wall distance
CEILING_M = 2.6  # ceiling height
AMBIENT_K = 295.15  # room air, 22 degC
_SURFACE_K = (294.2, AMBIENT_K, 296.4)  # floor, wall, ceiling (warm air rises)
_SURFACE_RGB = ((118, 108, 94), (198, 192, 180), (222, 222, 216))
_FLOOR, _WALL, _CEILING = 0, 1, 2  # surface indices


@dataclass(frozen=True)
class Camera:
    """A level pinhole camera on the robot.

    Attributes:
        height_px: image rows.
        width_px: image columns.
        hfov_deg: horizontal field of view, degrees.
        mount_m: optical centre height above the floor, metres.
    """

    height_px: int
    width_px: int
    hfov_deg: float
    mount_m: float = 0.8

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (square pixels)."""
        return 0.5 * self.width_px / math.tan(math.radians(self.hfov_deg) / 2)


@dataclass(frozen=True)
class SceneObject:
    """Something in the room at one instant (an upright ellipse or box facing the camera).

    Attributes:
        x_m: lateral centre, metres.
        z_m: distance, metres.
        width_m: width, metres.
        height_m: height, metres.
        bottom_m: height of its lowest point above the floor, metres.
        core_k: temperature at its centre, kelvin.
        edge_k: temperature at its rim, kelvin.
        rgb: 8-bit colour.
        solid: whether depth sensors see it (flames are not).
        ellipse: ellipse (people, fire) or box footprint.
    """

    x_m: float
    z_m: float
    width_m: float
    height_m: float
    bottom_m: float
    core_k: float
    edge_k: float
    rgb: tuple[int, int, int]
    solid: bool = True
    ellipse: bool = True


def _person(x_m: float, z_m: float, rgb: tuple[int, int, int], lying: float = 0.0) -> SceneObject:
    """Standing (``lying`` 0) to lying on the floor (``lying`` 1)."""
    width_m, height_m = 0.45 + 1.25 * lying, 1.72 - 1.4 * lying
    return SceneObject(x_m, z_m, width_m, height_m, 0.0, 306.5, 302.0, rgb)


def _triangle(x: float) -> float:
    """Triangle wave of period 1 in [-1, 1]."""
    return 4.0 * abs(x - math.floor(x + 0.5)) - 1.0


def _wall_cue(x_m: float, size_m: tuple[float, float], bottom_m: float, rgb: tuple[int, int, int],
              z_m: float = WALL_M - 0.01, *, ellipse: bool = False) -> SceneObject:  # fmt: skip
    """A flat RGB-only marking on the back wall: not solid (no depth) and at the wall's temperature."""
    width_m, height_m = size_m
    return SceneObject(x_m, z_m, width_m, height_m, bottom_m, AMBIENT_K, AMBIENT_K, rgb, solid=False, ellipse=ellipse)


def _door_cue(x_m: float, tau_s: float) -> list[SceneObject]:
    """door_knock: the door in the back wall being knocked on (drawn while the knocking lasts)."""
    return [_wall_cue(1.5 * x_m, (0.9, 1.95), 0.08, (92, 60, 38))]


def _alarm_cue(x_m: float, tau_s: float) -> list[SceneObject]:
    """alarm: the smoke alarm's red strobe high on the back wall, lit in the beep pattern (T3)."""
    cyc = tau_s % 4.0
    lit = cyc < 3.0 and cyc % 1.0 < 0.5
    return [_wall_cue(x_m, (0.5, 0.3), 1.9, (255, 32, 24) if lit else (140, 24, 20))]


def _glass_cue(x_m: float, tau_s: float) -> list[SceneObject]:
    """glass_break: a window pane in the back wall with a dark hole smashed through it."""
    pane = _wall_cue(1.2 * x_m, (1.2, 0.9), 1.0, (170, 205, 232))
    hole = _wall_cue(1.2 * x_m, (0.55, 0.5), 1.2, (38, 42, 52), z_m=WALL_M - 0.02, ellipse=True)
    return [pane, hole]


# audio-only events get an RGB-only cue on the back wall (thermal and depth stay untouched)
_WALL_CUES = {"door_knock": _door_cue, "alarm": _alarm_cue, "glass_break": _glass_cue}


def _event_objects(event: Event, t_s: float) -> list[SceneObject]:
    p = event_params(event)
    tau_s, length_s = t_s - event.start_s, max(event.end_s - event.start_s, 1e-6)
    frac = min(max(tau_s / length_s, 0.0), 1.0)
    if event.label in {"walking", "running"}:
        speed_mps = 1.3 if event.label == "walking" else 3.2
        return [_person(1.6 * _triangle(p.x_m + speed_mps * tau_s / 6.4), p.z_m, p.shirt_rgb)]
    if event.label == "fall":
        lying = min(max((tau_s - 0.3) / 0.4, 0.0), 1.0)
        return [_person(p.x_m, p.z_m, p.shirt_rgb, lying)]
    if event.label == "speech":
        return [_person(p.x_m, p.z_m, p.shirt_rgb)]
    if event.label == "approach":
        return [_person(0.15 * p.x_m, 5.0 - 4.2 * frac, p.shirt_rgb)]
    if event.label == "obstacle":
        return [SceneObject(0.1 * p.x_m, 3.0 - 2.6 * frac, 0.6, 0.7, 0.0, AMBIENT_K - 0.6, AMBIENT_K - 0.4,
                            (150, 108, 62), ellipse=False)]  # fmt: skip
    if event.label == "engine":
        return [SceneObject(p.x_m, 3.6, 0.9, 0.75, 0.0, 341.0, 318.0, (72, 74, 80), ellipse=False)]
    if event.label in _WALL_CUES:
        return _WALL_CUES[event.label](p.x_m, tau_s)
    if event.label == "fire":
        flicker = 0.5 + 0.25 * math.sin(2 * math.pi * 7.3 * t_s) + 0.25 * math.sin(2 * math.pi * 3.1 * t_s + 1.0)
        return [SceneObject(p.x_m, 4.0, 0.7, 0.6 + 0.3 * flicker, 0.0, 690.0 + 40.0 * flicker, 420.0,
                            (255, 120 + int(90 * flicker), 30), solid=False)]  # fmt: skip
    return []


def objects_at(events: list[Event], t_s: float) -> list[SceneObject]:
    """Objects in the room at ``t_s`` seconds from the active ``events``, far to near."""
    objs = [o for e in events if e.start_s <= t_s < e.end_s for o in _event_objects(e, t_s)]
    return sorted(objs, key=lambda o: -o.z_m)


@dataclass(frozen=True)
class RoomView:
    """The empty room through one camera (computed once per stream).

    Attributes:
        camera: the camera.
        depth_m: (H, W) float32 metres along the optical axis.
        kelvin: (H, W) float32 surface temperatures, kelvin.
        rgb: (H, W, 3) float32 distance-shaded colours, 8-bit units.
    """

    camera: Camera
    depth_m: NDArray[np.float32]
    kelvin: NDArray[np.float32]
    rgb: NDArray[np.float32]


def room_view(camera: Camera) -> RoomView:
    """Render the empty room (floor, back wall at 5 m, ceiling at 2.6 m) through ``camera``."""
    f, h, w = camera.focal_px, camera.height_px, camera.width_px
    dv = (np.arange(h, dtype=np.float64) + 0.5 - h / 2)[:, None] * np.ones((1, w))
    floor_m = np.where(dv > 0, camera.mount_m * f / np.maximum(dv, 1e-9), np.inf)
    ceiling_m = np.where(dv < 0, (CEILING_M - camera.mount_m) * f / np.maximum(-dv, 1e-9), np.inf)
    depth_m = np.minimum(np.minimum(floor_m, ceiling_m), WALL_M)
    surface = np.full((h, w), _WALL, np.intp)
    surface[floor_m < WALL_M] = _FLOOR
    surface[ceiling_m < WALL_M] = _CEILING
    rgb = np.asarray(_SURFACE_RGB, np.float64)[surface] * (1.05 - 0.05 * depth_m / WALL_M)[..., None]
    kelvin = np.asarray(_SURFACE_K, np.float64)[surface]
    return RoomView(camera, depth_m.astype(np.float32), kelvin.astype(np.float32), rgb.astype(np.float32))


def _footprints(
    camera: Camera, objects: list[SceneObject]
) -> Iterator[tuple[tuple[slice, slice], NDArray[np.bool_], NDArray[np.float64], SceneObject]]:
    """Per visible object: (rows, cols) region, mask, squared normalised radius r² (0 centre), object."""
    f, cx, cy = camera.focal_px, camera.width_px / 2, camera.height_px / 2
    for o in objects:
        if o.z_m <= 0.05:
            continue
        u0, u1 = cx + f * (o.x_m - o.width_m / 2) / o.z_m, cx + f * (o.x_m + o.width_m / 2) / o.z_m
        v0 = cy - f * (o.bottom_m + o.height_m - camera.mount_m) / o.z_m
        v1 = cy - f * (o.bottom_m - camera.mount_m) / o.z_m
        c0, c1 = max(math.floor(u0), 0), min(math.ceil(u1), camera.width_px)
        r0, r1 = max(math.floor(v0), 0), min(math.ceil(v1), camera.height_px)
        if c1 <= c0 or r1 <= r0:
            continue
        uu = (np.arange(c0, c1) + 0.5 - (u0 + u1) / 2) / ((u1 - u0) / 2)
        vv = (np.arange(r0, r1) + 0.5 - (v0 + v1) / 2) / ((v1 - v0) / 2)
        r2 = vv[:, None] ** 2 + uu[None, :] ** 2
        mask = r2 <= 1.0 if o.ellipse else (np.abs(vv[:, None]) <= 1.0) & (np.abs(uu[None, :]) <= 1.0)
        yield (slice(r0, r1), slice(c0, c1)), mask, np.minimum(r2, 1.0), o


def render_depth(view: RoomView, objects: list[SceneObject]) -> NDArray[np.float32]:
    """Clean depth: (H, W) float32 metres; ``objects`` far to near."""
    depth_m = view.depth_m.copy()
    for region, mask, _, o in _footprints(view.camera, objects):
        if o.solid:
            patch = depth_m[region]
            patch[mask] = np.minimum(patch[mask], o.z_m)
    return depth_m


def render_thermal(view: RoomView, objects: list[SceneObject]) -> NDArray[np.float32]:
    """Clean scene temperature: (H, W) float32 kelvin; ``objects`` far to near."""
    kelvin = view.kelvin.copy()
    for region, mask, r2, o in _footprints(view.camera, objects):
        kelvin[region][mask] = (o.edge_k + (o.core_k - o.edge_k) * (1.0 - r2))[mask]
    return kelvin


def render_rgb(view: RoomView, objects: list[SceneObject]) -> NDArray[np.float32]:
    """Clean view: (H, W, 3) float32 in 8-bit units; ``objects`` far to near."""
    rgb = view.rgb.copy()
    for region, mask, r2, o in _footprints(view.camera, objects):
        shade = 1.0 - 0.25 * r2[mask] if o.ellipse else np.ones(int(mask.sum()))
        rgb[region][mask] = np.asarray(o.rgb, np.float64)[None, :] * shade[:, None]
    return rgb
