"""Many labelers submitting at once against a live server (2 worker processes), each submission sent
twice at the same moment: every submission is stored exactly once and nothing is lost."""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from labelkit import seed
from sqlalchemy import func, select

from instructrl.label import service
from instructrl.label.models import Assignment, Demonstration, Labeler, Rating

N_LABELERS, N_DEMO, N_RANK, OVERLAP, K, THREADS = 12, 10, 10, 2, 4, 24


def test_many_labelers_submit_at_once(db_url, live_server_factory, tmp_path):
    labelers = [f"lab{i:02d}" for i in range(N_LABELERS)]
    world = seed(
        db_url,
        labelers,
        overlap=OVERLAP,
        demo_prompts=[f"Demonstration prompt {i}" for i in range(N_DEMO)],
        rank_prompts=[
            {"prompt": f"Ranking prompt {i}", "completions": [f"output {i}.{j}" for j in range(K)]}
            for i in range(N_RANK)
        ],
    )
    server = live_server_factory(db_url, workers=2)

    # What each labeler holds, through the API with its own token.
    jobs = []
    rng = random.Random(0)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name in labelers:
            headers = {"Authorization": f"Bearer {world.tokens[name]}"}
            mine = http.get("/api/assignments", headers=headers).json()
            assert sorted(a["id"] for a in mine) == world.assignments[name]
            for a in mine:
                if a["kind"] == "demonstration":
                    bodies = [{"text": f"{name} writes for {a['id']} (copy {c})"} for c in (1, 2)]
                else:
                    detail = http.get(f"/api/assignments/{a['id']}", headers=headers).json()
                    bodies = []
                    for _ in (1, 2):
                        ranks = [rng.randint(1, K) for _ in range(K)]
                        bodies.append(
                            {
                                "outputs": [
                                    {
                                        "completion_id": c["id"],
                                        "likert": rng.randint(1, 7),
                                        "flags": ["hallucination"] if r == K else [],
                                        "rank": r,
                                    }
                                    for c, r in zip(detail["completions"], ranks)
                                ]
                            }
                        )
                jobs.append((name, a["id"], a["kind"], headers, bodies))
    n_assignments = len(jobs)
    assert n_assignments == (N_DEMO + N_RANK) * OVERLAP

    # Each assignment is submitted twice at the same instant (a double click, a retried request).
    results: list[tuple[int, str, int, float]] = []
    lock = threading.Lock()
    barriers = {aid: threading.Barrier(2) for _, aid, *_ in jobs}

    def submit(job, copy: int) -> None:
        _name, aid, kind, headers, bodies = job
        try:
            barriers[aid].wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        t0 = time.perf_counter()
        r = client.post(f"/api/assignments/{aid}/{kind}", json=bodies[copy], headers=headers)
        with lock:
            results.append((aid, kind, r.status_code, time.perf_counter() - t0))

    rng.shuffle(jobs)
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with (
        httpx.Client(base_url=server.url, timeout=60, limits=limits) as client,
        ThreadPoolExecutor(max_workers=THREADS) as pool,
    ):
        start = time.perf_counter()
        futures = [pool.submit(submit, job, copy) for job in jobs for copy in (0, 1)]  # pairs side by side
        for f in futures:
            f.result()
        elapsed = time.perf_counter() - start

    by_assignment: dict[int, list[int]] = {}
    for aid, _, status, _ in results:
        by_assignment.setdefault(aid, []).append(status)
    assert len(by_assignment) == n_assignments
    assert all(sorted(s) == [200, 409] for s in by_assignment.values()), {
        aid: s for aid, s in by_assignment.items() if sorted(s) != [200, 409]
    }

    # The database holds every submission exactly once, each with what its labeler sent.
    n_demo_assignments = N_DEMO * OVERLAP
    n_rank_assignments = N_RANK * OVERLAP
    with world.tx() as s:
        assert s.scalar(select(func.count(Assignment.id)).where(Assignment.status == "submitted")) == n_assignments
        assert s.scalar(select(func.count(Demonstration.id))) == n_demo_assignments
        assert s.scalar(select(func.count(Rating.id))) == n_rank_assignments * K
        texts = s.execute(
            select(Demonstration.text, Labeler.name, Assignment.id)
            .join(Assignment, Demonstration.assignment_id == Assignment.id)
            .join(Labeler)
        ).all()
        assert all(text.startswith(f"{name} writes for {aid} (copy ") for text, name, aid in texts)
        per_assignment = dict(
            s.execute(select(Rating.assignment_id, func.count(Rating.id)).group_by(Rating.assignment_id)).all()
        )
        assert set(per_assignment.values()) == {K}
        demos = list(service.demonstration_records(s))
        rankings = list(service.ranking_records(s))
        agreement = service.labeler_agreement(s)
    assert len(demos) == n_demo_assignments and len(rankings) == n_rank_assignments
    assert agreement.tasks == N_RANK  # every ranking task was ranked by OVERLAP labelers

    latencies = sorted(t for *_, t in results)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\n[concurrency {db_url.split(':')[0]}] {len(results)} requests ({n_assignments} assignments x 2) from "
        f"{N_LABELERS} labelers, {THREADS} client threads, 2 server workers: {elapsed:.2f}s, "
        f"{len(results) / elapsed:.1f} req/s, latency p50 {1000 * statistics.median(latencies):.0f} ms, "
        f"p95 {1000 * p95:.0f} ms; stored {n_assignments}/{n_assignments}, duplicates refused {len(results) - n_assignments}"
    )
    world.engine.dispose()
