"""Run as a separate process by the end-to-end tests: subscribe, check, report JSON on stdout.

usage: python subscriber_process.py ADDRESS TOPIC PATTERN IDLE_SECS [DELAY_SECS [BUFFER STALL]]
Reads until no frame arrived for IDLE_SECS (up to 120 s for the first one: a loaded machine may
take long to compile the pipeline's kernels), then prints per-instrument checks. DELAY_SECS: sleep
that long after each frame (a slow consumer, so the publisher's queue fills). BUFFER: frames the
subscriber's socket queues (default 8192); STALL: seconds to stop reading after the first frame
(a consumer that stalls while the publisher's queue and the TCP buffers fill up).
"""

import itertools
import json
import sys
import time

import numpy as np

from hftagg.client import subscribe


def main() -> None:
    address, topic, pattern, idle = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    buffer = int(sys.argv[6]) if len(sys.argv) > 6 else 8192
    stall = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    breaks = 0
    records = 0
    with subscribe(address, topic, pattern=pattern, timeout_secs=idle, buffer_frames=buffer) as sub:
        print(json.dumps({"ready": True}), flush=True)  # dialing (imports can take seconds)
        first_frame = sub.next_frame(120.0)
        time.sleep(stall)
        batches = iter(sub) if first_frame is not None else iter(())
        for batch in itertools.chain([first_frame.records] if first_frame else [], batches):
            if delay:
                time.sleep(delay)
            records += len(batch)
            ids = batch["instrument_id"]
            seqs = batch["seq"].astype(np.int64)
            for iid in np.unique(ids):
                s = seqs[ids == iid]
                key = int(iid)
                if key in last and s[0] != last[key] + 1:
                    breaks += 1
                breaks += int(np.count_nonzero(np.diff(s) != 1))
                first.setdefault(key, int(s[0]))
                last[key] = int(s[-1])
        result = {
            "records": records,
            "frames": sub.frames,
            "gaps": sub.gaps,
            "duplicates": sub.duplicates,
            "restarts": sub.restarts,
            "bad_frames": sub.bad_frames,
            "seq_breaks": breaks,
            "first_seq": first,
            "last_seq": last,
            "dtype_names": list(batch.dtype.names) if records else [],
        }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
