#!/usr/bin/env python3
"""Synthesizes assets/ringtone.wav: Fala's ringtone, made here from sine waves.

Three soft bell-like notes (E5, G#5, B5: an E major arpeggio) with a few harmonics and an
exponential decay, twice, then a pause; 2.4 s, 16 kHz mono 16-bit, looped while a call rings.
Standard library only, deterministic: running it again gives the same bytes.
"""
import math
import struct
import wave
from pathlib import Path

RATE = 16_000
LENGTH_S = 2.4
NOTES_HZ = [659.25, 830.61, 987.77]
NOTE_GAP_S = 0.16
HARMONICS = [(1.0, 1.0), (2.0, 0.35), (3.0, 0.12)]  # (multiple, amplitude)
DECAY_PER_S = 6.0
PEAK = 0.45


def sample(t: float) -> float:
    value = 0.0
    for repeat in range(2):
        for i, freq in enumerate(NOTES_HZ):
            start = repeat * 0.7 + i * NOTE_GAP_S
            dt = t - start
            if dt < 0:
                continue
            attack = min(1.0, dt / 0.005)  # 5 ms attack: no click
            env = attack * math.exp(-DECAY_PER_S * dt)
            for mult, amp in HARMONICS:
                value += env * amp * math.sin(2 * math.pi * freq * mult * dt)
    return value


def main() -> None:
    n = int(RATE * LENGTH_S)
    raw = [sample(i / RATE) for i in range(n)]
    peak = max(abs(v) for v in raw)
    # Fade the last 50 ms so the loop point is silent.
    fade = int(0.05 * RATE)
    frames = bytearray()
    for i, v in enumerate(raw):
        gain = min(1.0, (n - i) / fade)
        frames += struct.pack("<h", int(v / peak * PEAK * gain * 32767))
    out = Path(__file__).with_name("ringtone.wav")
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))


if __name__ == "__main__":
    main()
