"""Fine-tuning: `run(cfg) -> run directory`, built on accelerate.

The loop is accelerate's canonical one (as in its `nlp_example.py`), so `accelerate launch`
trains data-parallel on several processes, GPUs or nodes unchanged. Batches are length-grouped
and padded per batch; the best dev macro-F1 picks the checkpoint (never a test set); the run is
written to `<output_dir>/.<run_name>.partial/` and renamed to `<output_dir>/<run_name>/` only
when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, get_scheduler
from transformers.trainer_pt_utils import get_length_grouped_indices

from arabic_events import metrics
from arabic_events.checkpointing import list_checkpoints, load_checkpoint, save_checkpoint
from arabic_events.config import Config, save_config
from arabic_events.data import Fields, label_matrix, read_records
from arabic_events.modeling import (
    build_tokenizer_and_model,
    load_tokenizer,
    pick_device,
    pick_precision,
)
from arabic_events.preprocess import Preprocessor
from arabic_events.report import write_model_card

logger = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    """A run directory that exists already, or a resume with nothing to resume."""


class Encoded:
    """Tokenised sentences with their multi-hot labels, ready for batching."""

    def __init__(
        self, records: list[dict], tokenizer, prep: Preprocessor, labels: list[str], max_length: int
    ) -> None:
        self.records = records
        texts = prep.batch([r["text"] for r in records])
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        self.features = [
            {"input_ids": ids, "attention_mask": mask}
            for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)
        ]
        self.lengths = [len(ids) for ids in enc["input_ids"]]
        self.labels = label_matrix(records, labels)

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, indices: list[int], collator) -> dict[str, torch.Tensor]:
        out = collator([self.features[i] for i in indices])
        out["labels"] = torch.from_numpy(self.labels[indices])
        return out


def _read(path: str, cfg: Config, require_ids: bool = True) -> list[dict]:
    d = cfg.data
    fields = Fields(text=d.text_field, labels=d.labels_field, id=d.id_field, doc=d.doc_field)
    return read_records(path, fields, d.labels, require_ids=require_ids)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, group: bool) -> list[list[int]]:
    """The batches of one epoch: shuffled by `seed`, length-grouped when `group`."""
    generator = torch.Generator().manual_seed(seed)
    if group:
        order = get_length_grouped_indices(lengths, batch_size, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_probs(
    model, data: Encoded, collator, batch_size: int, accelerator: Accelerator
) -> np.ndarray:
    """Sigmoid scores for every sentence, computed in length order, returned in input order."""
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    probs = np.zeros((len(data), data.labels.shape[1]), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size].tolist()
            batch = {k: v.to(accelerator.device) for k, v in data.batch(idx, collator).items()}
            batch.pop("labels")
            with accelerator.autocast():
                logits = model(**batch).logits
            probs[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    model.train()
    return probs


def _pos_weight(cfg: Config, labels: np.ndarray) -> torch.Tensor | None:
    if cfg.train.pos_weight == "none":
        return None
    positives = labels.sum(0)
    negatives = len(labels) - positives
    weight = np.clip(negatives / np.maximum(positives, 1), 1.0, cfg.train.pos_weight_cap)
    return torch.tensor(weight, dtype=torch.float32)


def _prepare_dirs(cfg: Config, resume: bool) -> tuple[Path, Path]:
    final = Path(cfg.train.output_dir) / cfg.train.run_name
    partial = Path(cfg.train.output_dir) / f".{cfg.train.run_name}.partial"
    if (final / "model.safetensors").exists():
        raise RunDirError(
            f"{final} holds a trained model already; choose another train.run_name or delete "
            "the folder."
        )
    if resume and not partial.is_dir():
        raise RunDirError(f"--resume: no interrupted run at {partial}; start without --resume.")
    if partial.exists() and not resume:
        raise RunDirError(
            f"{partial} holds an interrupted run of {cfg.train.run_name!r}: continue it with "
            "--resume, or delete the folder to start again."
        )
    return final, partial


def run(cfg: Config, resume: bool = False) -> Path:
    """Fine-tune the configured encoder and write a complete run directory.

    Args:
        cfg: A validated config.
        resume: Continue the interrupted run of the same name from its last checkpoint.

    Returns:
        The run directory `<train.output_dir>/<train.run_name>`.
    """
    device = pick_device(cfg.train.device)
    precision = pick_precision(cfg.train.precision, device)
    final, partial = _prepare_dirs(cfg, resume)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
        gradient_accumulation_steps=cfg.train.grad_accum,
    )
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    try:
        _train_and_write(cfg, resume, accelerator, final, partial)
    finally:
        if accelerator.num_processes == 1:
            AcceleratorState._reset_state(reset_partial_state=True)  # a later run may differ
    return final


def _train_and_write(
    cfg: Config, resume: bool, accelerator: Accelerator, final: Path, partial: Path
) -> None:
    accelerator.wait_for_everyone()
    set_seed(cfg.train.seed)
    labels = list(cfg.data.labels)
    prep = Preprocessor.from_config(cfg.model)
    train_records = _read(cfg.data.train_file, cfg)
    if cfg.data.max_train_samples:
        train_records = train_records[: cfg.data.max_train_samples]
    dev_records = _read(cfg.data.dev_file, cfg)
    eval_records = {
        name: _read(path, cfg, require_ids=False)  # fail now, not after training
        for name, path in cfg.data.eval_files.items()
    }
    train_texts = prep.batch([r["text"] for r in train_records])
    tokenizer, model = build_tokenizer_and_model(cfg.model, labels, train_texts)
    if resume and (partial / "tokenizer").is_dir():
        tokenizer = load_tokenizer(str(partial / "tokenizer"))
    tokenizer.model_max_length = cfg.model.max_length  # what `pipeline` truncates at by default
    if accelerator.is_main_process and not resume:
        (partial / "tokenizer").mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(partial / "tokenizer")
        save_config(cfg, partial / "run_config.yaml")
    accelerator.wait_for_everyone()
    train_data = Encoded(train_records, tokenizer, prep, labels, cfg.model.max_length)
    dev_data = Encoded(dev_records, tokenizer, prep, labels, cfg.model.max_length)
    logger.info(
        "train %d sentences, dev %d, labels %s, precision %s on %s (%d process(es))",
        len(train_data),
        len(dev_data),
        labels,
        accelerator.mixed_precision,
        accelerator.device,
        accelerator.num_processes,
    )
    state = _Loop(cfg, accelerator, model, tokenizer, train_data, dev_data, partial)
    state.train(resume)
    if accelerator.is_main_process:
        _finish(cfg, state, prep, labels, eval_records, partial, final, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()


class _Loop:
    """The optimisation loop and its bookkeeping."""

    def __init__(
        self,
        cfg: Config,
        accelerator: Accelerator,
        model,
        tokenizer,
        train_data: Encoded,
        dev_data: Encoded,
        partial: Path,
    ) -> None:
        self.cfg, self.acc, self.tokenizer = cfg, accelerator, tokenizer
        self.train_data, self.dev_data, self.partial = train_data, dev_data, partial
        self.collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)
        t = cfg.train
        world = accelerator.num_processes
        self.batches_per_epoch = max(1, len(train_data) // (t.batch_size * world))
        self.steps_per_epoch = max(1, self.batches_per_epoch // t.grad_accum)
        self.total_steps = t.max_steps or math.ceil(t.epochs * self.steps_per_epoch)
        optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay), lr=t.learning_rate)
        scheduler = get_scheduler(
            t.scheduler,
            optimizer,
            num_warmup_steps=int(t.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(
            model, optimizer, scheduler
        )
        weight = _pos_weight(cfg, train_data.labels)
        self.loss_fn = torch.nn.BCEWithLogitsLoss(
            pos_weight=None if weight is None else weight.to(accelerator.device)
        )
        self.step, self.best, self.best_step, self.bad_evals = 0, -1.0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.seconds, self.samples = 0.0, 0

    def _progress(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "seconds": self.seconds,
            "samples": self.samples,
        }

    def _resume(self) -> None:
        found = list_checkpoints(self.partial / "checkpoints")
        if not found:
            logger.warning("no checkpoint in %s yet: starting from step 0", self.partial)
            return
        progress = load_checkpoint(
            found[-1], self.acc.unwrap_model(self.model), self.optimizer, self.scheduler
        )
        self.step = progress.pop("step")
        for key, value in progress.items():
            setattr(self, key, value)
        logger.info("resumed from %s (step %d of %d)", found[-1].name, self.step, self.total_steps)

    def train(self, resume: bool) -> None:
        t = self.cfg.train
        if resume:
            self._resume()
        self.model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            disable=not self.acc.is_local_main_process,
            dynamic_ncols=True,
        )
        stop = self.step >= self.total_steps
        while not stop:
            epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
            batches = epoch_batches(
                self.train_data.lengths, t.batch_size, t.seed + epoch, t.group_by_length
            )
            mine = batches[self.acc.process_index :: self.acc.num_processes]
            mine = mine[: self.steps_per_epoch * t.grad_accum][done_in_epoch * t.grad_accum :]
            started, loss_sum, loss_n = time.perf_counter(), 0.0, 0
            for micro, indices in enumerate(mine, 1):
                batch = {
                    k: v.to(self.acc.device)
                    for k, v in self.train_data.batch(indices, self.collator).items()
                }
                gold = batch.pop("labels")
                with self.acc.accumulate(self.model):
                    logits = self.model(**batch).logits
                    loss = self.loss_fn(logits.float(), gold)
                    self.acc.backward(loss)
                    if self.acc.sync_gradients and t.max_grad_norm > 0:
                        self.acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
                self.samples += len(indices) * self.acc.num_processes
                if micro % t.grad_accum:
                    continue
                self.step += 1
                bar.update(1)
                self.seconds += time.perf_counter() - started
                started = time.perf_counter()
                if t.log_every and self.step % t.log_every == 0:
                    rate = self.samples / max(self.seconds, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", sps=f"{rate:.1f}")
                    logger.info(
                        "step %d loss %.4f lr %.2e %.1f samples/s",
                        self.step,
                        loss_sum / loss_n,
                        self.scheduler.get_last_lr()[0],
                        rate,
                    )
                    loss_sum, loss_n = 0.0, 0
                end_of_epoch = self.step % self.steps_per_epoch == 0
                evaluate_now = (self.step % t.eval_every == 0) if t.eval_every else end_of_epoch
                last = self.step >= self.total_steps
                if evaluate_now or last:
                    stop = self._evaluate() or last
                if (t.save_every and self.step % t.save_every == 0) or (
                    not t.save_every and (evaluate_now or last)
                ):
                    self._checkpoint()
                started = time.perf_counter()
                if stop:
                    break
        bar.close()

    def _evaluate(self) -> bool:
        """Score dev, keep the best model; True when early stopping says stop."""
        probs = predict_probs(
            self.model, self.dev_data, self.collator, self.cfg.eval.batch_size, self.acc
        )
        scores = metrics.compute(
            probs, self.dev_data.labels, self.cfg.eval.threshold, list(self.cfg.data.labels)
        )
        macro = scores["macro_f1"]
        self.history.append(
            {"step": self.step, "dev_macro_f1": macro, "dev_micro_f1": scores["micro_f1"]}
        )
        logger.info("step %d dev macro-F1 %.4f micro-F1 %.4f", self.step, macro, scores["micro_f1"])
        if macro > self.best:
            self.best, self.best_step, self.bad_evals = macro, self.step, 0
            if self.acc.is_main_process:
                self._save_best()
        else:
            self.bad_evals += 1
        patience = self.cfg.train.early_stopping_patience
        return bool(patience and self.bad_evals >= patience)

    def _save_best(self) -> None:
        tmp, best = self.partial / ".best.tmp", self.partial / "best"
        shutil.rmtree(tmp, ignore_errors=True)
        self.acc.unwrap_model(self.model).save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(best, ignore_errors=True)
        os.replace(tmp, best)

    def _checkpoint(self) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            save_checkpoint(
                self.partial / "checkpoints",
                self.step,
                self.acc.unwrap_model(self.model),
                self.optimizer,
                self.scheduler,
                self._progress(),
                keep=self.cfg.train.keep_checkpoints,
            )
        self.acc.wait_for_everyone()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(
            param
        )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _finish(
    cfg: Config,
    loop: _Loop,
    prep: Preprocessor,
    labels: list[str],
    eval_records: dict[str, list[dict]],
    partial: Path,
    final: Path,
    accelerator: Accelerator,
) -> None:
    """Load the best model, tune thresholds on dev, score held-out sets, write, rename."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        partial / "best", use_safetensors=True
    ).to(accelerator.device)
    dev_probs = predict_probs(model, loop.dev_data, loop.collator, cfg.eval.batch_size, accelerator)
    thresholds = np.full(len(labels), cfg.eval.threshold)
    if cfg.eval.tune_thresholds:
        thresholds = metrics.tune_thresholds(
            dev_probs,
            loop.dev_data.labels,
            cfg.eval.threshold_grid,
            cfg.eval.threshold,
            cfg.eval.threshold_tolerance,
        )
    results: dict[str, Any] = {
        "dev": {
            "tuned": metrics.compute(dev_probs, loop.dev_data.labels, thresholds, labels),
            "at_0.5": metrics.compute(dev_probs, loop.dev_data.labels, 0.5, labels),
        }
    }
    for name, records in eval_records.items():
        data = Encoded(records, loop.tokenizer, prep, labels, cfg.model.max_length)
        probs = predict_probs(model, data, loop.collator, cfg.eval.batch_size, accelerator)
        results[name] = {
            "tuned": metrics.compute(probs, data.labels, thresholds, labels),
            "at_0.5": metrics.compute(probs, data.labels, 0.5, labels),
        }
    results["training"] = {
        "best_step": loop.best_step,
        "steps": loop.step,
        "total_steps": loop.total_steps,
        "train_seconds": round(loop.seconds, 1),
        "samples_per_second": round(loop.samples / max(loop.seconds, 1e-9), 2),
        "history": loop.history,
        "train_sentences": len(loop.train_data),
        "data_sha256": {
            name: hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for name, path in {
                "train": cfg.data.train_file,
                "dev": cfg.data.dev_file,
                **cfg.data.eval_files,
            }.items()
        },
        "dev_sentences": len(loop.dev_data),
        "processes": accelerator.num_processes,
        "precision": accelerator.mixed_precision,
    }
    model.save_pretrained(partial, safe_serialization=True)
    loop.tokenizer.save_pretrained(partial)
    prep.save(partial)
    thresholds_map = {name: float(v) for name, v in zip(labels, thresholds, strict=True)}
    (partial / "thresholds.json").write_text(json.dumps(thresholds_map, indent=2), encoding="utf-8")
    (partial / "metrics.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    from arabic_events.inference import calibrate_int8

    calibrate_int8(partial, [r["text"] for r in loop.dev_data.records],
                   source=f"dev: {cfg.data.dev_file}")
    write_model_card(partial, cfg, results, thresholds_map, name=final.name)
    for leftover in ("best", "checkpoints", "tokenizer"):
        shutil.rmtree(partial / leftover, ignore_errors=True)
    if final.exists():  # a model card kept in git without weights: the new run replaces it
        logger.info("replacing %s (no weights: a model card kept in git)", final)
        shutil.rmtree(final)
    os.replace(partial, final)
    logger.info("run directory written: %s", final)
