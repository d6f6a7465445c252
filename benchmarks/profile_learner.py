"""Profile of the learner side of one iteration: Scorer.score then Learner.update on a real batch, in-process.

    python benchmarks/profile_learner.py RUN_DIR/trajectories/iteration_00001.parquet [--repeats 3] [--profile]
        [dotted learner overrides, e.g. learner.dtype=float32]

Builds the scorer (reference + online implicit PRM) and one learner rank (a gloo world of one) with the default
config, as `freelunch train` places them, and times score() and update() on the same batch --repeats times
(the first call is a warm-up and not counted). With --profile it prints torch.profiler's table of the operators
that took the most CPU time over one score() + update(). Run it with PYTHONPATH=OTHER_CHECKOUT to profile another
commit on the same batch (the roles' constructors are the same since the learner was first written).
"""

import argparse
import statistics
import time
from dataclasses import replace

import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batch", help="a trajectories/iteration_NNNNN.parquet file of a run")
    parser.add_argument("--repeats", type=int, default=3, help="timed score+update calls after one warm-up")
    parser.add_argument("--profile", action="store_true", help="print the torch.profiler operator table")
    parser.add_argument("overrides", nargs="*", help="learner.KEY=VALUE")
    args = parser.parse_intermixed_args()

    from actors.trajectory import to_ipc
    from cluster.config import load
    from cluster.models import resolve_model
    from cluster.train import add_step_advantages
    from learner.learner import Learner, free_port
    from learner.scorer import Scorer

    cfg = load(None, args.overrides)
    model_dir = str(resolve_model(cfg.learner.model))
    table = pq.read_table(args.batch)
    keep = [name for name in table.column_names if name not in ("ref_logp", "progress_adv", "step_advantage")]
    batch = to_ipc(table.select(keep))
    scorer = Scorer(cfg.learner, model_dir=model_dir, temperature=cfg.actors.temperature, seed=cfg.seed)
    learner = Learner(
        replace(cfg.learner, num_learners=1),
        model_dir=model_dir,
        temperature=cfg.actors.temperature,
        rank=0,
        world_size=1,
        seed=cfg.seed,
        num_updates=cfg.num_iterations,
    )
    learner.setup("127.0.0.1", free_port())

    def iteration() -> tuple[float, float]:
        start = time.perf_counter()
        scored, _ = scorer.score(batch)
        middle = time.perf_counter()
        learner.update(add_step_advantages(scored, cfg)[0])
        return middle - start, time.perf_counter() - middle

    iteration()  # warm-up
    times = [iteration() for _ in range(args.repeats)]
    score, update = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    tokens = sum(len(t) for t in table.column("tokens").to_pylist())
    print(f"batch {args.batch}: {table.num_rows} trajectories, {tokens} tokens")
    print(f"score {score:.2f} s, update {update:.2f} s, score+update {score + update:.2f} s (median of {args.repeats})")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            iteration()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
