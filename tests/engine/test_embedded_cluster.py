"""One embedded cluster per process: fits without a Dask client share it.

Run in a fresh interpreter: the session's client is the default one in this process,
and the embedded cluster is only used without a default client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json
    import pickle
    import threading

    import numpy as np
    from sklearn.base import clone

    from dask_dpsgd import (DPSVILatentDirichletAllocation, HSA2CAgent,
                            close_embedded_cluster)
    from dask_dpsgd.engine import _cluster


    def address():
        return _cluster._embedded.cluster.scheduler_address


    if __name__ == "__main__":
        X = np.random.default_rng(0).poisson(1.0, (64, 30))
        lda = DPSVILatentDirichletAllocation(n_components=3, random_state=0)
        seen = []
        for i in range(4):  # a partial_fit stream: one cluster, not four
            lda.partial_fit(X[16 * i:16 * (i + 1)])
            seen.append(address())
        report = {"stream_one_cluster": len(set(seen)) == 1,
                  "key": list(_cluster._embedded.key[1:])}
        # The estimator holds no client or cluster: clone and pickle stay clean.
        blob = pickle.dumps(lda)
        clone(lda)
        report["no_cluster_in_estimator"] = b"LocalCluster" not in blob and not any(
            "Client" in type(v).__name__ or "Cluster" in type(v).__name__
            for v in vars(lda).values())
        lda.fit(X)
        report["fit_reuses"] = address() == seen[0]
        # Another layout replaces it.
        HSA2CAgent("CartPole-v1", total_timesteps=500, n_workers=1,
                   threads_per_worker=1).fit()
        report["relayout"] = (address() != seen[0]
                              and list(_cluster._embedded.key[1:3]) == [1, 1])
        # Two fits at once in threads, of two layouts: the second gets a cluster of
        # its own instead of closing the one the first runs on.
        outcome = {}

        def run(name, **kw):
            try:
                HSA2CAgent("CartPole-v1", total_timesteps=3_000, **kw).fit()
                outcome[name] = "ok"
            except Exception as exc:  # reported, not raised, in a thread
                outcome[name] = repr(exc)

        threads = [threading.Thread(target=run, args=("1x1",),
                                    kwargs=dict(n_workers=1, threads_per_worker=1)),
                   threading.Thread(target=run, args=("2x1",),
                                    kwargs=dict(n_workers=2, threads_per_worker=1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report["concurrent"] = outcome
        report["closed"] = close_embedded_cluster()
        report["closed_again"] = close_embedded_cluster()
        lda.partial_fit(X[:16])
        report["restarted"] = _cluster._embedded is not None
        print("REPORT " + json.dumps(report))
        # No close here: the cluster is closed at interpreter exit.
''')


def test_fits_without_a_client_share_one_embedded_cluster(tmp_path):
    script = tmp_path / "embedded.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report == {"stream_one_cluster": True, "key": report["key"],
                      "no_cluster_in_estimator": True, "fit_reuses": True,
                      "relayout": True, "concurrent": {"1x1": "ok", "2x1": "ok"},
                      "closed": True, "closed_again": False,
                      "restarted": True}, report
