"""The arithmetic of bench/paper_scale.py, kept free of torch and of timing: parse a Snakemake dry run into jobs,
turn each job into work items (unit x count) from its rule, wildcards and the resolved config, and add up unit
costs into seconds per job, per stage and for the whole DAG on C cores. tests/test_paper_scale.py runs it on a fake
unit table and a fake dry run.

A unit is a measured number of seconds with a key such as `fwd:<net>|b1000|t2` (seconds per sample of a forward
pass) or `startup:attack` (a job's fixed cost). The Planner writes down, for every unit a job needs, a spec of what
to measure (`Planner.specs[key]`); bench/paper_scale.py measures the specs and returns {key: seconds}.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

# ---- the dry run -------------------------------------------------------------------------------------------------

_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_FIELD = re.compile(r"^\s{4}(\w+): (.*)$")


@dataclass
class Job:
    """One job of a dry run: its rule, wildcards, threads (1 unless the dry run prints more), benchmark file and
    the files it reads and writes (for the DAG)."""

    jobid: int
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    benchmark: str | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _files(value: str) -> list[str]:
    return [v.strip() for v in value.split(", ") if v.strip()]


def _wildcards(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(", "):
        key, sep, val = part.partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of `snakemake -n` output (Snakemake 8/9 format: a `rule NAME:` line, then indented fields)."""
    jobs: list[Job] = []
    current: Job | None = None
    for line in text.splitlines():
        m = _RULE.match(line)
        if m:
            current = Job(jobid=-1, rule=m.group(1))
            jobs.append(current)
            continue
        if current is None:
            continue
        f = _FIELD.match(line)
        if not f:
            if line.strip() and not line.startswith(" "):
                current = None  # the block ended (a date line, Job stats, ...)
            continue
        key, value = f.group(1), f.group(2)
        if key == "jobid":
            current.jobid = int(value)
        elif key == "wildcards":
            current.wildcards = _wildcards(value)
        elif key == "threads":
            current.threads = int(value)
        elif key == "benchmark":
            current.benchmark = value.strip()
        elif key == "input":
            current.inputs = _files(value)
        elif key == "output":
            current.outputs = _files(value)
    for i, job in enumerate(jobs):  # a dry run always prints a jobid; keep the parse total anyway
        if job.jobid < 0:
            job.jobid = 10**9 + i
    return jobs


def job_counts(jobs: Iterable[Job]) -> dict[str, int]:
    counts = Counter(j.rule for j in jobs)
    return {**dict(counts), "total": sum(counts.values())}


def dependencies(jobs: list[Job]) -> dict[int, set[int]]:
    """jobid -> the jobids whose outputs it reads (its inputs matched to outputs, or to a folder above them)."""
    producer = {out: j.jobid for j in jobs for out in j.outputs}
    deps: dict[int, set[int]] = {}
    for j in jobs:
        found = set()
        for path in j.inputs:
            p = path
            while p and p not in producer:
                p = p.rpartition("/")[0]
            if p:
                found.add(producer[p])
        found.discard(j.jobid)
        deps[j.jobid] = found
    return deps


# ---- time arithmetic ---------------------------------------------------------------------------------------------

Work = list[tuple[str, float]]  # (unit key, count)


def job_seconds(work: Work, units: Mapping[str, float]) -> tuple[float, list[str]]:
    """(sum of count x unit, keys missing from `units`)."""
    total, missing = 0.0, []
    for key, count in work:
        if count == 0:
            continue
        if key not in units or units[key] is None or not math.isfinite(units[key]):
            missing.append(key)
            continue
        total += count * units[key]
    return total, missing


def lpt_wall(durations: list[tuple[float, int]], cores: int) -> float:
    """Wall time of independent jobs (seconds, threads) on `cores` cores, longest first, each job holding
    min(threads, cores) cores for its whole run."""
    return schedule([(d, t, set()) for d, t in durations], cores)


def schedule(jobs: list[tuple[float, int, set[int]]], cores: int) -> float:
    """Wall time of a DAG (duration, threads, indices of the jobs it waits for) on `cores` cores: list scheduling,
    among ready jobs the one with the longest path to the end first (a job needs min(threads, cores) free cores)."""
    n = len(jobs)
    if n == 0:
        return 0.0
    children: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(d) for _, _, d in jobs]
    for i, (_, _, deps) in enumerate(jobs):
        for d in deps:
            children[d].append(i)
    # longest path from each job to the end (reverse topological order by Kahn on the reversed graph)
    order, indeg = [], list(waiting)
    stack = [i for i in range(n) if indeg[i] == 0]
    while stack:
        i = stack.pop()
        order.append(i)
        for c in children[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                stack.append(c)
    if len(order) != n:
        raise ValueError("schedule: the jobs' dependencies have a cycle")
    tail = [0.0] * n
    for i in reversed(order):
        tail[i] = jobs[i][0] + max((tail[c] for c in children[i]), default=0.0)
    ready = [(-tail[i], i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []  # (end time, job)
    free, now, done = cores, 0.0, 0
    blocked: list[tuple[float, int]] = []
    while done < n:
        while ready:
            prio, i = heapq.heappop(ready)
            need = min(max(jobs[i][1], 1), cores)
            if need <= free:
                free -= need
                heapq.heappush(running, (now + jobs[i][0], i))
            else:
                blocked.append((prio, i))
        for item in blocked:
            heapq.heappush(ready, item)
        blocked = []
        if not running:
            raise ValueError("schedule: nothing runs and nothing is ready")
        now, i = heapq.heappop(running)
        finished = [i]
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[1])
        for i in finished:
            free += min(max(jobs[i][1], 1), cores)
            done += 1
            for c in children[i]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, (-tail[c], c))
    return now


def power_law(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(c, p) of t = c n^p fitted by least squares on log t against log n (at least two sizes)."""
    if len(points) < 2:
        raise ValueError("power_law: needs two sizes or more")
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(t, 1e-9)) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    p = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return math.exp(my - p * mx), p


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of t = a + b k by least squares (k: iterations); b >= 0, a >= 0."""
    if len(points) == 1:
        k, t = points[0]
        return 0.0, t / max(k, 1)
    ks = [k for k, _ in points]
    ts = [t for _, t in points]
    mk, mt = sum(ks) / len(ks), sum(ts) / len(ts)
    skk = sum((k - mk) ** 2 for k in ks)
    b = max(sum((k - mk) * (t - mt) for k, t in zip(ks, ts)) / skk, 0.0) if skk else 0.0
    a = mt - b * mk
    if a < 0:  # noise made the intercept negative: all of it per iteration
        return 0.0, mt / mk
    return a, b


# ---- what each job does ------------------------------------------------------------------------------------------

@dataclass
class DatasetFacts:
    """What the cost of a job on a dataset depends on: sample shape, classes, split sizes (train: per epoch for
    data drawn fresh every epoch)."""

    shape: tuple[int, ...]
    classes: int
    train: int
    test: int
    validation: int = 0
    fresh: bool = False


def short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


# foolbox 3 attacks: (gradient passes, forward passes) per sample and eps at their default settings (upper bounds:
# DeepFool stops once the image is adversarial, the line searches once the criterion holds)
FOOLBOX_PASSES = {
    "LinfFastGradientAttack": (1, 1), "L2FastGradientAttack": (1, 1),
    "LinfBasicIterativeAttack": (10, 1), "L2BasicIterativeAttack": (10, 1),
    "LinfProjectedGradientDescentAttack": (40, 1), "L2ProjectedGradientDescentAttack": (50, 1),
    "L2DeepFoolAttack": (50 * 10, 50), "LinfDeepFoolAttack": (50 * 10, 50),
    "GaussianBlurAttack": (0, 1000), "LinearSearchContrastReductionAttack": (0, 1000),
    "LinfAdditiveUniformNoiseAttack": (0, 1), "L2AdditiveGaussianNoiseAttack": (0, 1),
    "L2AdditiveUniformNoiseAttack": (0, 1), "LinearSearchBlendedUniformNoiseAttack": (0, 2000),
    "SaltAndPepperNoiseAttack": (0, 1000), "BoundaryAttack": (0, 25000),
}

# Rules whose work is reading dumps and writing a table (and maybe a figure): their fixed cost plus one figure.
TABLE_RULES_WITH_FIGURE = {"robustness", "direction_table", "matrix_table", "references", "run_cost",
                           "label_attack_table", "label_efficiency", "label_stats", "lesci_grid"}
TABLE_RULES = {"ara_table", "label_set", "battery_model", "estimator_similarity", "lesci_model", "all"}


def eps_count(attack: Mapping[str, Any]) -> int:
    """Budgets an attack runs: the grid's nonzero eps (eps 0 is the clean input, not attacked), else one."""
    eps = attack.get("eps")
    if not isinstance(eps, list):
        return 1
    return max(1, sum(1 for e in eps if not (isinstance(e, (int, float)) and e == 0)))


def attack_iterations(attack: Mapping[str, Any]) -> tuple[str, float, float]:
    """(engine class, iterations per sample and eps, forward-only passes per sample and eps) of an attack entry:
    FGSM 1, BIM/PGD its steps, C&W binary steps x iterations (an upper bound with abort_early), the search its steps
    + 1, Square its queries (an upper bound: it stops when every image is fooled), foolbox from
    FOOLBOX_PASSES (upper bounds) with `options.steps` where given."""
    method = attack["method"]
    if method == "fgsm":
        return "fgsm", 1, 0
    if method in ("bim", "pgd"):
        return "pgd", attack.get("steps") or 10, 0
    if method == "cw":
        return "cw", attack.get("binary_search_steps", 9) * attack.get("max_iterations", 10000), 0
    if method == "search":
        return "search", attack["steps"] + (attack.get("mode", "standard") != "standard"), 0
    if method == "square":
        return "square", attack.get("n_queries", 5000), 0
    if method == "foolbox":
        grads, fwds = FOOLBOX_PASSES.get(attack["attack"], (10, 10))
        steps = (attack.get("options") or {}).get("steps")
        if steps is not None:
            if grads > 10:
                grads = steps * (grads // 50 if "DeepFool" in attack["attack"] else 1)
            if fwds > 1:
                fwds = steps
        return "pgd", grads, fwds
    raise KeyError(f"no cost model for attack method {method!r}")


class Planner:
    """Work items of each job (`work(job)`), and the specs of the units they use (`specs`).

    cfg: the validated config of the run (advpipe.config.load); facts: dataset name -> DatasetFacts;
    accuracy: model name -> test accuracy (how many images `images: correct` attacks get), `default_accuracy`
    otherwise; threads: force every job's thread count (None: the dry run's).
    """

    def __init__(self, cfg: Mapping[str, Any], facts: Mapping[str, DatasetFacts],
                 accuracy: Mapping[str, float] | None = None, default_accuracy: float = 0.93,
                 threads: int | None = None, train_accuracy: float = 1.0, source: str | None = None):
        from advpipe.pipeline import specs as job_specs  # pure Python (no torch): the rules' own resolvers

        self.cfg, self.facts, self.jobspecs = cfg, facts, job_specs
        self.accuracy = dict(accuracy or {})
        self.default_accuracy, self.threads, self.train_accuracy = default_accuracy, threads, train_accuracy
        self.source = source  # another checkout whose scripts the jobs run (a finished run's clone): fixed costs of it
        self.specs: dict[str, dict[str, Any]] = {}

    # -- the config --
    def model(self, name: str) -> dict[str, Any]:
        return self.cfg["models"][name]

    def base_of(self, name: str) -> str:
        """A defended model's base (LESCI), else the model itself."""
        entry = self.model(name)
        return entry["defense"]["lesci"]["base"] if "defense" in entry else name

    def dataset_of(self, name: str) -> str:
        return self.model(self.base_of(name))["dataset"]

    def acc(self, model: str) -> float:
        return self.accuracy.get(model, self.default_accuracy)

    def t(self, job: Job) -> int:
        return self.threads or job.threads

    # -- networks --
    def net(self, model: str) -> tuple[str, dict[str, Any]]:
        """(key, build spec) of the network of `model` (its base for a defended model): what its cost depends on
        (normalisation and weights files aside; vector label heads grouped under one representative)."""
        name = self.base_of(model)
        entry = self.model(name)
        if "checkpoint" in entry:  # an imported published network: SPEC 2's ResNet-44 layout
            entry = {**entry, "arch": "preact_resnet", "arch_args": {"depth": 44, "width": 16}}
        facts = self.facts[entry["dataset"]]
        args = {k: v for k, v in (entry.get("arch_args") or {}).items() if k != "weights"}
        spec: dict[str, Any] = {"arch": entry["arch"], "arch_args": args, "shape": list(facts.shape),
                                "num_classes": facts.classes, "one_logit": bool(entry.get("one_logit"))}
        label = entry.get("label")
        if label and label["kind"] != "category":
            spec["label"] = self.label_shape(label["kind"], facts.classes)
        arch = f"{entry['arch']}{args.get('depth', '')}"
        shape = "x".join(map(str, facts.shape))
        tag = "" if "label" not in spec else f"+label{'x'.join(map(str, spec['label']))}"
        return f"{arch}@{shape}/{facts.classes}{tag}#{short_hash(spec)}", spec

    @staticmethod
    def label_shape(kind: str, classes: int) -> list[int]:
        """The label tensor shape of a label kind (SPEC 3): the image labels 64x64 (a file: BERT's 48x48), the vector
        labels (lowdim, normal_dim=D, uniform_gap=g) one representative of 50 values: their head is a Linear of the
        64-d features, small next to the backbone whatever D."""
        if kind in ("speech", "shuffle", "uniform", "composite", "random"):
            return [64, 64]
        if kind.startswith("file="):
            return [48, 48]
        return [50]

    def lesci_flops(self, model: str) -> float:
        """Extra flops per forward pass of a LESCI-defended model: the projection to r and the cosine similarity to
        every embedding row (n = correctly classified training images of the base)."""
        entry = self.model(model)
        if "defense" not in entry:
            return 0.0
        lesci = entry["defense"]["lesci"]
        facts = self.facts[self.dataset_of(model)]
        n_emb = facts.train * (1 - self.cfg["lesci"]["validation_fraction"]) * self.train_accuracy
        width = 512  # the layers LESCI sits at here are at most this wide per sample (act8_global_avg, penultimate)
        return 2.0 * lesci["r"] * (n_emb + width)

    # -- units --
    def unit(self, key: str, spec: dict[str, Any]) -> str:
        self.specs.setdefault(key, spec)
        return key

    def startup(self, rule: str, extra: str = "") -> str:
        key = f"startup:{rule}" + (f":{extra}" if extra else "") + (f"@{self.source}" if self.source else "")
        return self.unit(key, {"kind": "startup", "rule": rule, "extra": extra, "source": self.source})

    def fwd(self, model: str, batch: int, threads: int) -> Work:
        key, net = self.net(model)
        work = [(self.unit(f"fwd:{key}|t{threads}",
                           {"kind": "fwd", "net": net, "batch": batch, "threads": threads}), 1.0)]
        flops = self.lesci_flops(model)
        if flops:
            work.append((self.unit("flop", {"kind": "flop"}), flops))
        return work

    def attack_units(self, model: str, attack: Mapping[str, Any], batch: int, threads: int) -> tuple[str, str]:
        """(per-sample-and-eps overhead key, per-iteration key) of an attack engine class on a network."""
        engine, _, _ = attack_iterations(attack)
        key, net = self.net(model)
        spec = {"kind": "attack", "engine": engine, "net": net, "attack": dict(attack), "batch": batch,
                "threads": threads}
        if attack["method"] == "foolbox":
            spec["attack"] = {"method": "pgd", "eps": 8 / 255, "steps": 10, "step_size": None}
        base = f"{engine}:{key}|t{threads}"  # the first attack of its class on the net is measured
        self.unit(f"iter0:{base}", spec)
        self.unit(f"iter1:{base}", spec)
        return f"iter0:{base}", f"iter1:{base}"

    def search_units(self, model: str, batch: int, threads: int, momentum: float) -> tuple[str, str]:
        key, net = self.net(model)
        spec = {"kind": "search", "net": net, "batch": batch, "threads": threads, "momentum": momentum}
        base = f"search:{key}|t{threads}"
        self.unit(f"search0:{base}", spec)
        self.unit(f"search1:{base}", spec)
        return f"search0:{base}", f"search1:{base}"

    def png(self, shape: tuple[int, ...]) -> str:
        return self.unit(f"png:{'x'.join(map(str, shape))}", {"kind": "png", "shape": list(shape)})

    def saved_images(self, model: str, n: int) -> Work:
        """PNGs of `num_saved_images` per class among n images (SPEC 1's samples; none for vector data)."""
        facts = self.facts[self.dataset_of(model)]
        if len(facts.shape) != 3:
            return []
        count = min(n, self.cfg["represent"]["num_saved_images"] * facts.classes)
        return [(self.png(facts.shape), count)]

    def small_figure(self) -> str:
        return self.unit("small_figure", {"kind": "small_figure"})

    # -- the rules --
    def work(self, job: Job) -> Work:
        """Work items of one job; KeyError for a rule without a cost model."""
        rule = job.rule
        if rule == "all":
            return []
        w: Work = [(self.unit("snakemake_job", {"kind": "snakemake_job"}), 1.0)]
        w += [(self.startup(rule), 1.0)] if rule not in ("project", "project_oos") else []
        method = getattr(self, f"_{rule}", None)
        if method is not None:
            return w + method(job)
        if rule in TABLE_RULES_WITH_FIGURE:
            return w + [(self.small_figure(), 1.0)]
        if rule in TABLE_RULES:
            return w
        raise KeyError(f"no cost model for rule {rule!r}")

    def _train(self, job: Job) -> Work:
        name = job.wildcards["model"]
        threads = self.t(job)
        tjob = self.jobspecs.train_job(self.cfg, name)
        entry, recipe = tjob["model"], tjob["model"]["train"]
        facts = self.facts[entry["dataset"]]
        key, net = self.net(name)
        bs = recipe["batch_size"]
        objective = dict(recipe.get("objective") or {})
        attacks = tjob.get("train_attacks", {})
        spec = {"kind": "train", "net": net, "recipe": {k: recipe[k] for k in ("optimizer", "batch_size", "augment")
                                                        if k in recipe},
                "objective": objective, "attack_training": attacks.get("attack_training"),
                "label": "label" in entry, "threads": threads, "model_name": name}
        train_key = self.unit(f"train:{key}|{short_hash([spec['recipe'], objective, spec['attack_training']])}"
                              f"|t{threads}", spec)
        vf, level = recipe.get("validation_fraction"), recipe.get("level", 100)
        n_full = facts.train
        select = attacks.get("select_attack")
        if vf is not None:
            n_val = round(n_full * vf)
            n_train = math.floor((n_full - n_val) * level / 100)
        else:
            n_train, n_val = n_full, (facts.validation if select else 0)
        epochs = recipe["epochs"]
        work: Work = [(train_key, epochs * math.ceil(n_train / bs))]
        eval_batch = bs * 20 if select else 1000
        fwd = self.fwd(name, min(eval_batch, 1000), threads)
        if select:  # BestByEps50: the select attack on the validation split every epoch
            overhead, per_iter = self.attack_units(name, select, min(eval_batch, 500), threads)
            _, iters, fwds = attack_iterations(select)
            k = eps_count(select)
            work += [(overhead, epochs * n_val * k), (per_iter, epochs * n_val * k * iters)]
            work += [(u, c * epochs * n_val * (1 + k * fwds)) for u, c in fwd]
        elif n_val:
            work += [(u, c * epochs * n_val) for u, c in fwd]
        final = facts.test + (0 if (n_val or select) else n_train)  # test accuracy (+ train accuracy)
        work += [(u, c * final) for u, c in fwd]
        return work

    def _represent(self, job: Job) -> Work:
        name, split = job.wildcards["model"], job.wildcards["split"]
        facts = self.facts[self.dataset_of(name)]
        n = getattr(facts, split if split != "validation" else "validation")
        return [(u, c * n) for u, c in self.fwd(name, self.cfg["represent"]["batch_size"], self.t(job))] \
            + self.saved_images(name, n)

    def attacked(self, model: str, attack: Mapping[str, Any]) -> int:
        n = self.facts[self.dataset_of(model)].test
        sub = attack.get("subset")
        if sub:
            n = min(n, sub["n"])
        if attack.get("images", "correct") == "correct":
            n = round(n * self.acc(model))
        return n

    def _attack(self, job: Job) -> Work:
        model, name = job.wildcards["model"], job.wildcards["attack"]
        threads = self.t(job)
        attack = self.jobspecs.attack_job(self.cfg, model, name)["attack"]
        n = self.attacked(model, attack)
        k = eps_count(attack)
        _, iters, fwds = attack_iterations(attack)
        bs = attack["batch_size"]
        overhead, per_iter = self.attack_units(model, attack, bs, threads)
        fwd = self.fwd(model, bs, threads)
        # iter0 (per image and eps) holds the engine's own forward passes (reference classes, success check); on top:
        # forward-only passes of foolbox attacks, the adversarials' representations (one eps), the clean scores
        # (`images: all`)
        passes = n * k * fwds + (n if not isinstance(attack.get("eps"), list) else 0) \
            + (n if attack.get("images", "correct") == "all" else 0)
        work: Work = [(overhead, n * k), (per_iter, n * k * iters)] + [(u, c * passes) for u, c in fwd]
        flops = self.lesci_flops(model)
        if flops and iters:
            work.append((self.unit("flop", {"kind": "flop"}), flops * n * k * iters))
        return work + self.saved_images(model, n)

    def _ara(self, job: Job) -> Work:
        model = job.wildcards["model"]
        cfg = self.cfg["ara"]
        n = min(cfg["n_images"], self.facts[self.dataset_of(model)].test)
        threads = self.t(job)
        s0, s1 = self.search_units(model, min(cfg["batch_size"], n), threads, cfg["momentum"])
        work: Work = [(s0, 2 * n), (s1, 2 * n * (cfg["steps"] + 1)), (self.small_figure(), 1.0)]
        return work + [(u, c * n) for u, c in self.fwd(model, min(cfg["batch_size"], n), threads)]

    def _explain(self, job: Job) -> Work:
        model = job.wildcards["model"]
        cfg = self.cfg["explanations"]["explain"]
        facts = self.facts[self.dataset_of(model)]
        n = min(cfg["n_images"], facts.test)
        pairs = n * facts.classes
        threads = self.t(job)
        s0, s1 = self.search_units(model, min(cfg["batch_size"], pairs), threads, 0.0)
        work: Work = [(s0, pairs), (s1, pairs * cfg["steps"]), (self.small_figure(), 1.0)]
        if len(facts.shape) == 3:  # the input, the true and 2nd class and every class, per image
            work.append((self.png(facts.shape), n * (facts.classes + 3)))
        return work + [(u, c * n) for u, c in self.fwd(model, max(n, 1), threads)]

    def _alignment(self, job: Job) -> Work:
        model = job.wildcards["model"]
        cfg = self.cfg["direction"]
        facts = self.facts[self.dataset_of(model)]
        n = getattr(facts, cfg["split"])
        key, net = self.net(model)
        threads = self.t(job)
        batch = min(cfg["batch_size"], n)
        unit = self.unit(f"align:{key}|b{batch}|t{threads}",
                         {"kind": "align", "net": net, "batch": batch, "threads": threads})
        work: Work = [(unit, n)]
        flops = self.lesci_flops(model)
        if flops:
            work.append((self.unit("flop", {"kind": "flop"}), 3 * flops * n))
        return work

    def vrapi_points(self, model: str) -> int:
        """Clean points of a vrapi projection: the correctly classified test images (every attack's rows)."""
        return round(self.facts[self.dataset_of(model)].test * self.acc(model))

    def projection_unit(self, model: str, projection: str, attacks: int) -> str:
        from advpipe.projections import estimator_options  # numpy only

        n = self.vrapi_points(model)
        _, net = self.net(model)
        dim = self.feature_dim(net)
        options = estimator_options(projection, self.cfg["vrapi"]["projection_options"])
        spec = {"kind": "project", "projection": projection, "n": n, "dim": dim, "attacks": attacks,
                "options": options}
        return self.unit(f"project:{projection}|n{n}|d{dim}|a{attacks}|{short_hash(options)}", spec)

    @staticmethod
    def feature_dim(net: Mapping[str, Any]) -> int:
        """Width of the representation (the vector before the last linear layer) of the vrapi networks."""
        arch, args = net["arch"], net["arch_args"]
        if arch in ("resnet18", "tv_resnet18"):
            return 512
        if arch == "small_cnn":
            return int(args.get("hidden", 32))
        if arch in ("preact_resnet", "cifar_resnet"):
            return 4 * int(args.get("width", 16))
        if arch == "mlp":
            return int((args.get("hidden") or [256])[-1])
        return 512

    def _project(self, job: Job) -> Work:
        w = job.wildcards
        return [(self.startup("project", w["projection"]), 1.0),
                (self.projection_unit(w["model"], w["projection"], 1), 1.0)]

    def _project_oos(self, job: Job) -> Work:
        w = job.wildcards
        attacks = len(self.cfg["vrapi"]["attacks"])
        return [(self.startup("project", w["projection"]), 1.0),
                (self.projection_unit(w["model"], w["projection"], attacks), 1.0)]

    def _score(self, job: Job) -> Work:
        v = self.cfg["vrapi"]
        work: Work = []
        for model in v["models"]:
            n = self.vrapi_points(model)
            unit = self.unit(f"score_file:n{n}", {"kind": "score_file", "n": n})
            work.append((unit, len(v["attacks"]) * len(v["projections"]) * v["trials"]))
        return work

    def _plot(self, job: Job) -> Work:
        model = job.wildcards["model"]
        n = self.vrapi_points(model)
        classes = self.facts[self.dataset_of(model)].classes
        plot = self.cfg["vrapi"]["plot"]
        spec = {"kind": "figure_set", "n": n, "classes": classes, "approximate": plot["approximate"],
                "dpi": plot["dpi"]}
        return [(self.unit(f"figure_set:n{n}|c{classes}|{plot['approximate']}|{plot['dpi']}", spec), 1.0)]

    def _lesci_activations(self, job: Job) -> Work:
        model = job.wildcards["model"]
        facts = self.facts[self.dataset_of(model)]
        return [(u, c * facts.train) for u, c in self.fwd(model, self.cfg["lesci"]["batch_size"], self.t(job))]

    def _lesci_eval(self, job: Job) -> Work:
        model = job.wildcards["model"]
        facts = self.facts[self.dataset_of(model)]
        return [(u, c * facts.test) for u, c in self.fwd(model, self.cfg["lesci"]["batch_size"], self.t(job))]

    def _lesci_grid(self, job: Job) -> Work:
        model = job.wildcards["model"]
        grid = self.cfg["lesci"]["grid"]
        facts = self.facts[self.dataset_of(model)]
        vf = self.cfg["lesci"]["validation_fraction"]
        n_val, n_emb = facts.train * vf, facts.train * (1 - vf) * self.train_accuracy
        layers = len(grid.get("layers") or [1])
        flops = sum(2.0 * r * n_val * n_emb for r in grid.get("r") or []) * layers
        return [(self.small_figure(), 1.0), (self.unit("flop", {"kind": "flop"}), flops)]

    def _drift(self, job: Job) -> Work:
        """The engine's FGSM, PGD and C&W beside foolbox's and torchattacks': 3 implementations of each."""
        model = job.wildcards["model"]
        d = self.cfg["drift"]
        n = round(min(d["n_images"], self.facts[self.dataset_of(model)].test) * self.acc(model))
        threads = self.t(job)
        overhead, per_iter = self.attack_units(model, {"method": "pgd", "eps": 8 / 255, "steps": 10}, 100, threads)
        iters = 1 + d["pgd_steps"] + d["cw_steps"]
        return [(overhead, 3 * 3 * n), (per_iter, 3 * n * iters)]

    def _estimator_train(self, job: Job) -> Work:
        name = job.wildcards["estimator"]
        est = self.cfg["estimators"][name]
        facts = self.facts[est["dataset"]]
        threads = self.t(job)
        if est["method"] == "vrgan":
            # per batch: the critic on x and on x + dx_hat (its step), then the generator through the critic:
            # about three training batches of the critic (the generator's own passes left out)
            critic = {"dataset": est["dataset"], "arch": est["critic"]["arch"],
                      "arch_args": est["critic"]["arch_args"], "one_logit": True}
            key, net = self._net_of_entry(critic)
            bs = est["train_batch_size"]
            spec = {"kind": "train", "net": net, "recipe": {"optimizer": "adam", "batch_size": bs,
                                                            "augment": {"crop_padding": 0, "hflip": False}},
                    "objective": {}, "attack_training": None, "label": False, "threads": threads,
                    "model_name": f"{name} (critic)"}
            unit = self.unit(f"train:{key}|critic{bs}|t{threads}", spec)
            n = facts.train if facts.fresh else facts.train * (1 - est["validation_fraction"])
            iterations = est["iterations"] or math.ceil(n / bs)
            return [(unit, 3 * est["epochs"] * iterations)]
        bs = est["train_batch_size"]
        spec = {"kind": "cgan_batch", "shape": list(facts.shape), "classes": facts.classes, "batch": bs,
                "z_dim": est["z_dim"], "threads": threads}
        unit = self.unit(f"cgan_batch:{'x'.join(map(str, facts.shape))}/{facts.classes}|b{bs}|t{threads}", spec)
        return [(unit, est["epochs"] * math.ceil(facts.train / bs))]

    def _net_of_entry(self, entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        facts = self.facts[entry["dataset"]]
        args = {k: v for k, v in (entry.get("arch_args") or {}).items() if k != "weights"}
        spec = {"arch": entry["arch"], "arch_args": args, "shape": list(facts.shape), "num_classes": facts.classes,
                "one_logit": bool(entry.get("one_logit"))}
        return f"{entry['arch']}@{'x'.join(map(str, facts.shape))}/{facts.classes}#{short_hash(spec)}", spec

    def _estimate(self, job: Job) -> Work:
        name, split = job.wildcards["estimator"], job.wildcards["split"]
        est = self.cfg["estimators"][name]
        facts = self.facts[est["dataset"]]
        n = getattr(facts, split)
        threads = self.t(job)
        if est["method"] == "vrgan":  # one generator pass per image: about a critic forward
            critic = {"dataset": est["dataset"], "arch": est["critic"]["arch"], "arch_args": est["critic"]["arch_args"],
                      "one_logit": True}
            key, net = self._net_of_entry(critic)
            unit = self.unit(f"fwd:{key}|t{threads}", {"kind": "fwd", "net": net, "batch": 500, "threads": threads})
            return [(unit, n)]
        p = est["projection"]
        rows = max(1, est["batch_size"] // facts.classes) * facts.classes
        spec = {"kind": "cgan_step", "shape": list(facts.shape), "classes": facts.classes, "rows": rows,
                "z_dim": est["z_dim"], "threads": threads}
        unit = self.unit(f"cgan_step:{'x'.join(map(str, facts.shape))}/{facts.classes}|r{rows}|t{threads}", spec)
        return [(unit, n * facts.classes * (p["steps1"] + p["steps2"]))]


# ---- putting it together -----------------------------------------------------------------------------------------

@dataclass
class Prediction:
    seconds: dict[int, float]  # jobid -> seconds
    missing: dict[str, list[int]]  # unit key -> jobs that needed it
    unmodelled: dict[str, int]  # rule -> jobs without a cost model


def predict(jobs: list[Job], planner: Planner, units: Mapping[str, float]) -> Prediction:
    seconds, missing, unmodelled = {}, defaultdict(list), Counter()
    for job in jobs:
        try:
            work = planner.work(job)
        except KeyError:
            unmodelled[job.rule] += 1
            work = [(planner.startup(job.rule), 1.0)]
        s, miss = job_seconds(work, units)
        seconds[job.jobid] = s
        for key in miss:
            missing[key].append(job.jobid)
    return Prediction(seconds, dict(missing), dict(unmodelled))


def plan_units(jobs: list[Job], planner: Planner) -> dict[str, dict[str, Any]]:
    """Every unit spec the jobs need (fills planner.specs)."""
    for job in jobs:
        try:
            planner.work(job)
        except KeyError:
            planner.startup(job.rule)
    return planner.specs


def stage_table(jobs: list[Job], seconds: Mapping[int, float], cores: Iterable[int],
                stages: Mapping[str, str] | None = None, threads: Callable[[Job], int] | None = None) -> list[dict]:
    """One row per stage (rule, or `stages[rule]`): jobs, summed job seconds, and the stage's wall seconds alone on
    each core count (its jobs independent, longest first)."""
    stages = stages or {}
    threads = threads or (lambda j: j.threads)
    groups: dict[str, list[Job]] = defaultdict(list)
    for j in jobs:
        if j.rule != "all":
            groups[stages.get(j.rule, j.rule)].append(j)
    rows = []
    for stage, members in groups.items():
        durations = [(seconds[j.jobid], threads(j)) for j in members]
        row = {"stage": stage, "jobs": len(members), "job_s": sum(d for d, _ in durations),
               "rules": sorted({j.rule for j in members})}
        for c in cores:
            row[f"wall_{c}"] = lpt_wall(durations, c)
        rows.append(row)
    rows.sort(key=lambda r: -r["job_s"])
    return rows


def dag_wall(jobs: list[Job], seconds: Mapping[int, float], cores: int,
             threads: Callable[[Job], int] | None = None) -> float:
    """Wall seconds of the whole DAG on `cores` cores (see `schedule`)."""
    threads = threads or (lambda j: j.threads)
    index = {j.jobid: i for i, j in enumerate(jobs)}
    deps = dependencies(jobs)
    return schedule([(seconds[j.jobid], threads(j), {index[d] for d in deps[j.jobid] if d in index}) for j in jobs],
                    cores)


def hours(seconds: float) -> str:
    """A duration for the table: '12 s', '3.4 min', '5.6 h', '1,234 h'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    h = seconds / 3600
    return f"{h:,.1f} h" if h < 1000 else f"{h:,.0f} h"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
