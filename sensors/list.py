"""``python -m sensors.list``: the sensors this machine can see, for picking a source URI.

Sections: serial ports (pyserial), audio inputs (sounddevice), RealSense cameras
(pyrealsense2) and V4L2 video devices (sysfs). A missing library never crashes the
listing; its section says ``not available`` and names the package to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

_SYSFS_VIDEO = Path("/sys/class/video4linux")
_DEV = Path("/dev")


@dataclass(frozen=True)
class Section:
    """One kind of device.

    Attributes:
        name: ``"serial"``, ``"audio"``, ``"realsense"`` or ``"video"``.
        available: False when the library (or the OS facility) is missing.
        reason: why not available, naming the pip/apt package; None when available.
        devices: one dict per device; keys depend on the section (serial and audio
            devices carry the ``uri`` that opens them).
        note: a caveat shown under the section (e.g. ptys are not listed).
    """

    name: str
    available: bool
    reason: str | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


def list_serial() -> Section:
    """Serial ports from ``serial.tools.list_ports.comports()`` (ptys are never listed)."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return Section("serial", False, "pyserial is not installed (pip install pyserial)")
    devices = [
        {
            "uri": f"serial://{port.device}",
            "device": port.device,
            "description": port.description,
            "hwid": port.hwid,
            "vid_pid": f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None and port.pid is not None else None,
            "serial_number": port.serial_number,
        }
        for port in sorted(list_ports.comports(), key=lambda p: p.device)
    ]
    return Section("serial", True, devices=devices, note="pseudo-terminals (ptys, socat) are not listed")


def list_audio() -> Section:
    """Audio input devices as PortAudio (sounddevice) sees them."""
    from runtime.sources import SourceError
    from sensors.microphone import import_sounddevice, input_devices

    try:
        sd = import_sounddevice()
    except SourceError as exc:
        return Section("audio", False, str(exc).removeprefix("mic://: "))
    default_index = sd.default.device[0]
    hostapis = sd.query_hostapis()
    devices = [
        {
            "uri": f"mic://{quote(d['name'], safe='')}",
            "index": d["index"],
            "name": d["name"],
            "hostapi": hostapis[d["hostapi"]]["name"],
            "max_input_channels": d["max_input_channels"],
            "default_rate_hz": d["default_samplerate"],
            "default": d["index"] == default_index,
        }
        for d in input_devices(sd)
    ]
    note = None if devices else "no inputs: no sound card, or no audio server (see scripts/start_pulseaudio.sh)"
    return Section("audio", True, devices=devices, note=note)


def list_realsense() -> Section:
    """Intel RealSense devices from ``pyrealsense2.context().query_devices()``."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        if "libusb" in str(exc):
            return Section("realsense", False, f"{exc} (apt-get install libusb-1.0-0)")
        return Section("realsense", False, "pyrealsense2 is not installed (pip install pyrealsense2)")
    info = rs.camera_info
    devices = []
    for dev in rs.context().query_devices():
        fields = {"name": info.name, "serial": info.serial_number, "firmware": info.firmware_version}
        devices.append({key: dev.get_info(value) if dev.supports(value) else None for key, value in fields.items()})
    return Section("realsense", True, devices=devices)


def list_video(sysfs: Path = _SYSFS_VIDEO, dev: Path = _DEV) -> Section:
    """``/dev/video*`` nodes with their V4L2 names from ``/sys/class/video4linux/*/name``."""
    if not sys.platform.startswith("linux"):
        return Section("video", False, "V4L2 is Linux only")
    devices = []
    for node in sorted(dev.glob("video*"), key=lambda p: (len(p.name), p.name)):
        name_file = sysfs / node.name / "name"
        name = name_file.read_text(errors="replace").strip() if name_file.is_file() else None
        devices.append({"device": str(node), "name": name})
    note = None if devices else "no /dev/video* nodes"
    return Section("video", True, devices=devices, note=note)


LISTERS: dict[str, Callable[[], Section]] = {
    "serial": list_serial,
    "audio": list_audio,
    "realsense": list_realsense,
    "video": list_video,
}


def collect(names: Sequence[str] = tuple(LISTERS)) -> list[Section]:
    """Run each lister; an unexpected failure becomes an unavailable section, never a crash."""
    sections = []
    for name in names:
        try:
            sections.append(LISTERS[name]())
        except Exception as exc:  # a broken driver or library must not hide the other sections
            sections.append(Section(name, False, f"error: {type(exc).__name__}: {exc}"))
    return sections


def format_text(sections: Sequence[Section]) -> str:
    """Human-readable listing, one block per section."""
    lines = []
    for section in sections:
        if not section.available:
            lines.append(f"{section.name}: not available: {section.reason}")
            continue
        lines.append(f"{section.name}: {len(section.devices)} found")
        for device in section.devices:
            details = ", ".join(f"{k}={v}" for k, v in device.items() if k != "uri" and v not in (None, ""))
            lines.append(f"  {device.get('uri', device.get('device', ''))}  {details}")
        if section.note:
            lines.append(f"  ({section.note})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the listing; ``--json`` prints one JSON object keyed by section name."""
    parser = argparse.ArgumentParser(prog="python -m sensors.list", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", choices=sorted(LISTERS), action="append", help="list only this section")
    args = parser.parse_args(argv)
    sections = collect(args.only or tuple(LISTERS))
    if args.json:
        print(json.dumps({s.name: asdict(s) for s in sections}, indent=2, default=str))
    else:
        print(format_text(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
