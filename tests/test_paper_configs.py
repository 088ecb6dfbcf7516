"""The paper configs carry the original's literal constants (not values recomputed or rounded differently)."""
from pathlib import Path

import pytest

from advpipe import config as cfg
from advpipe.data.datasets import DatasetInfo
from advpipe.pipeline import train as train_stage

ROOT = Path(__file__).resolve().parents[1]

# wwoods/adversarial-explanations-cifar main.py:
#   MODEL_INPUT_OFFSET = [[0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]]
WWOODS_MEAN = [0.4914, 0.4822, 0.4465]
WWOODS_STD = [0.247, 0.243, 0.261]
PAPER_MODELS = ["resnet44_standard", "resnet44_adv_train", "resnet44_robust", "resnet44_all"]


@pytest.fixture(scope="module")
def explanations():
    return cfg.load(ROOT / "config/paper/explanations.yaml")


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_explanations_normalize_is_model_input_offset(explanations, model):
    assert explanations["models"][model]["normalize"] == {"mean": WWOODS_MEAN, "std": WWOODS_STD}


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_explanations_model_json_records_model_input_offset(explanations, model, monkeypatch):
    # The dataset's own statistics (what `normalize: dataset` would give) must not leak into model.json.
    dataset_std = (0.2470, 0.2435, 0.2616)
    monkeypatch.setattr(train_stage, "dataset_info", lambda *a: DatasetInfo(
        3, 32, 10, [str(i) for i in range(10)], (0.4914, 0.4822, 0.4465), dataset_std))
    model_cfg = explanations["models"][model]
    spec = train_stage.model_spec(model_cfg, explanations["datasets"][model_cfg["dataset"]],
                                  explanations["data_root"], explanations["seed"])
    assert spec["mean"] == WWOODS_MEAN
    assert spec["std"] == WWOODS_STD


def test_prebuilt_models_take_normalization_from_the_checkpoint():
    # The imported files carry their input_offset; a `normalize` here would be ignored or contradict it.
    prebuilt = cfg.load(ROOT / "config/paper/explanations_prebuilt.yaml")
    for name in PAPER_MODELS:
        model = prebuilt["models"][name]
        assert "checkpoint" in model and "arch" not in model
        assert model.get("normalize", "none") == "none"
