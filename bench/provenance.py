"""What Content Credentials add to a whole speech response: the time to sign it, per format and
length, in this process (the Ingress signs in a worker thread, beside encoding).

    python bench/provenance.py --rounds 50

wav, mp3 and flac get the manifest embedded (`ContentCredentials.embed`); opus, aac and pcm a
sidecar (`ContentCredentials.sidecar`) and its write to a local store (`ProvenanceStore.put`), as
a response of theirs does. Audio: 2, 5 and 20 s of noise at -20 dBFS, encoded as the service
encodes. Writes bench/results/<machine>-provenance.json and prints its table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, summary, write_result
from speech_service.audio import SAMPLE_RATE, encoding
from speech_service.config import ProvenanceSettings
from speech_service.provenance.credentials import EMBEDDED, ContentCredentials, SpeechFacts
from speech_service.provenance.development import write_signer
from speech_service.storage.objects import LocalObjectStore
from speech_service.storage.provenance import ProvenanceStore

SECONDS = (2, 5, 20)
FORMATS = ("wav", "mp3", "flac", "opus", "aac", "pcm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        signer = Path(tmp) / "signer"
        write_signer(signer)
        credentials = ContentCredentials(ProvenanceSettings(
            certificate_chain=str(signer / "chain.pem"), private_key=str(signer / "key.pem")))
        sidecars = ProvenanceStore(LocalObjectStore(Path(tmp) / "store"), ttl_s=3600)
        facts = SpeechFacts("bench", "0" * 64, "bench", None, "f5-tts")
        rows = {}
        for seconds in SECONDS:
            wave = (0.1 * np.random.default_rng(0).standard_normal(seconds * SAMPLE_RATE)).astype(np.float32)
            for fmt in FORMATS:
                data = encoding.encode(wave, fmt)
                times = []
                for i in range(args.rounds):
                    started = time.perf_counter()
                    if fmt in EMBEDDED:
                        credentials.embed(data, fmt, facts)
                    else:
                        sidecars.put(f"r{seconds}-{fmt}-{i}", credentials.sidecar(data, facts))
                    times.append(1000 * (time.perf_counter() - started))
                rows[f"{fmt}-{seconds}s"] = {"format": fmt, "seconds": seconds, "bytes": len(data),
                                             "how": "embedded" if fmt in EMBEDDED else "sidecar + store write",
                                             "ms": summary(times)}
    write_result(f"{machine()}-provenance", {"rounds": args.rounds, "results": rows})
    print("| format | how | " + " | ".join(f"{s} s: p50 ms" for s in SECONDS) + " |")
    print("| --- | --- |" + " --- |" * len(SECONDS))
    for fmt in FORMATS:
        how = rows[f"{fmt}-{SECONDS[0]}s"]["how"]
        print(f"| {fmt} | {how} | " + " | ".join(f"{rows[f'{fmt}-{s}s']['ms']['p50']:.2f}" for s in SECONDS) + " |")


if __name__ == "__main__":
    main()
