"""Train the demo model (a tiny LLaVA-1.5) on generated scenes, with minilazy's own model code.

    python -m minilazy.demo.train --out out/demo

`--out` is required, and a directory that already holds a checkpoint is refused unless
`--overwrite` is given, so that no run writes over the shipped one in weights/demo by accident.

The weights are a dict of canonical-name leaf tensors; `Model.from_weights(..., backend="torch")`
runs them through the torch path of the kernels, which are differentiable, so there is no
second definition of the architecture. Two stages:

1. Vision pretraining: the tower and projector learn, through a linear probe on every image
   token, the content of the grid cell the token lies in (empty or shape, colour, size) and
   which cell that is. Cheap (no decoder), and it gives the decoder features where "what is
   at the top left" is one attention lookup away.
2. Question answering: the whole model on multi-turn conversations (many questions per image
   so the image tokens are paid once), loss on answer tokens only, the tower at a lower
   learning rate, scenes growing from few objects to many. With `--grounding-weight`, an auxiliary
   loss also asks, at each question's last token, where the objects it names are
   (minilazy/demo/grounding.py).

Both stages stop at a step count or a time budget, whichever comes first; the learning-rate
schedule and the curriculum follow the larger of the two progress fractions, so a run cut
short by its budget still ends annealed. Checkpoints are written periodically and at the end.
Matrix products run in bf16 under autocast where the CPU multiplies bf16 natively (weights,
optimizer state and attention stay fp32), and in fp32 elsewhere, where bf16 products fall back to
a slow reference loop (the README gives the timings of both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minilazy.config import parse_config
from minilazy.demo.checkpoint import (
    earlier_runs, load_start, refuse_to_overwrite, save_checkpoint, write_preprocessor_config,
)
from minilazy.demo.dataset import IMAGE_TOKENS, Batch, SceneStream, tokenizer_corpus
from minilazy.demo.evaluate import held_out_questions, teacher_forced_correct
from minilazy.demo.grounding import StreamCapture, grounding_loss, grounding_targets
from minilazy.demo.initialization import demo_config, init_weights
from minilazy.demo.questions import SHORT_FAMILIES, TRAINING_FAMILIES
from minilazy.demo.schedule import Clock, autocast, lr_factor, resolve_precision
from minilazy.demo.scenes import COLORS, GRID, SHAPES, SIZES
from minilazy.demo.tokenizer import IMAGE, PAD, build_tokenizer, save_tokenizer
from minilazy.image_processing.clip import ClipImageProcessor
from minilazy.model import Model

VALIDATION_OFFSET = 500_000_000  # validation scenes: held out, and apart from evaluate's default range


def answer_loss(model: Model, batch: Batch, decoder_setup=None) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens of a padded batch (`decoder_setup`: the hook of
    `Model.forward_logits`, e.g. a `StreamCapture` for the grounding loss).

    Every row runs at the batch's full width: padding only follows a sequence's end and attention
    is causal, so no real token sees it, and the attention needs no per-row mask (the fused causal
    kernel then skips the masked blocks).
    """
    width = batch.input_ids.shape[1]
    logits = model.forward_logits(batch.input_ids, batch.pixel_values, torch.full_like(batch.lengths, width),
                                  decoder_setup)  # [B, T, V]
    mask = batch.loss_mask[:, 1:]
    return F.cross_entropy(logits[:, :-1][mask].float(), batch.input_ids[:, 1:][mask])


def cell_of_patch(patches_per_side: int) -> torch.Tensor:
    """Grid cell (row-major, 0..8) of each image token `[P]`."""
    idx = torch.arange(patches_per_side)
    cell_1d = idx * GRID // patches_per_side  # [S]
    return (cell_1d[:, None] * GRID + cell_1d[None, :]).reshape(-1)  # [S, S] -> [P]


def train_vision(model, weights, stream: SceneStream, args, log) -> None:
    """Stage 1: per-token probe of the cell contents on the projector's output."""
    dim = model.config.text.hidden_size
    heads = {"shape": 1 + len(SHAPES), "color": len(COLORS), "size": len(SIZES), "cell": GRID * GRID}
    generator = torch.Generator().manual_seed(args.seed)
    probe = {k: (torch.randn(n, dim, generator=generator) * 0.02).requires_grad_() for k, n in heads.items()}
    params = [w for n, w in weights.items() if n.startswith(("vision.", "projector."))] + list(probe.values())
    optimizer = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.01)
    cells = cell_of_patch(model.config.vision.patches_per_side)  # [P]
    clock = Clock(args.vision_steps, args.vision_minutes)
    bar = tqdm(desc="vision", total=args.vision_steps)
    step = 0
    while step < args.vision_steps and clock.progress(step) < 1:
        for group in optimizer.param_groups:
            group["lr"] = args.vision_lr * lr_factor(clock.progress(step), step, args.warmup)
        pixels, labels = stream.cell_batch(max_objects=6)
        targets = {k: v[:, cells] for k, v in labels.items()}  # [B, P] each
        targets["cell"] = cells.expand(pixels.shape[0], -1)
        with autocast(args.precision):
            features = model.image_features(pixels).view(pixels.shape[0], len(cells), dim)  # [B, P, D]
            # logits [B, cells, classes] -> [B*cells, classes] against targets [B, cells] -> [B*cells]
            losses = {k: F.cross_entropy((features @ probe[k].T).flatten(0, 1).float(), targets[k].flatten(),
                                         ignore_index=-100) for k in heads}
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            log(f"vision step {step} loss {loss.item():.4f} " + " ".join(f"{k} {v.item():.3f}" for k, v in losses.items()))
    bar.close()


@torch.no_grad()
def validate(model, tokenizer, processor, items) -> float:
    hits = []
    for i in range(0, len(items), 32):
        hits += teacher_forced_correct(model, tokenizer, processor, items[i: i + 32], IMAGE_TOKENS)
    return sum(hits) / len(hits)


def train_questions(model, weights, stream: SceneStream, tokenizer, processor, save, args, log) -> None:
    """Stage 2: answer-token cross-entropy on multi-turn conversations."""
    tower = [w for n, w in weights.items() if n.startswith("vision.")]
    rest = [w for n, w in weights.items() if not n.startswith("vision.")]
    groups = [{"params": rest, "base_lr": args.lr}, {"params": tower, "base_lr": args.lr * args.tower_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    validation = held_out_questions(args.validation_size, VALIDATION_OFFSET)
    clock = Clock(args.steps, args.minutes)
    last_save, best = time.time(), -1.0
    bar = tqdm(desc="questions", total=args.steps)
    step, running, grounded = 0, None, None  # running means of the answer and grounding losses
    while step < args.steps and clock.progress(step) < 1:
        progress = clock.progress(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(progress, step, args.warmup)
        max_objects = min(6, 2 + int(4 * progress / args.curriculum))
        with autocast(args.precision):
            grounding = None
            if args.grounding_weight > 0:
                batch, scenes, conversations = stream.scene_qa_batch(max_objects)
                capture = StreamCapture([args.grounding_layer])
                loss = answer_loss(model, batch, capture)
                grounding = grounding_loss(capture.streams[args.grounding_layer],
                                           grounding_targets(batch, scenes, conversations))
            else:
                loss = answer_loss(model, stream.qa_batch(max_objects))
        optimizer.zero_grad()
        (loss if grounding is None else loss + args.grounding_weight * grounding).backward()
        torch.nn.utils.clip_grad_norm_(rest + tower, 1.0)
        optimizer.step()
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if grounding is not None:
            grounded = grounding.item() if grounded is None else 0.95 * grounded + 0.05 * grounding.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", objects=max_objects)
        if step % 25 == 0:
            log(f"qa step {step} loss {running:.4f} " + (f"grounding {grounded:.4f} " if grounded is not None else "")
                + f"objects {max_objects} lr {optimizer.param_groups[0]['lr']:.2e} "
                f"elapsed {time.time() - clock.start:.0f}s")
        if time.time() - last_save > args.checkpoint_minutes * 60:
            accuracy = validate(model, tokenizer, processor, validation)
            log(f"qa step {step} validation exact match {accuracy:.1%}")
            if accuracy >= best:
                best = accuracy
                save({"stage": "questions", "step": step, "validation_exact_match": accuracy})
            last_save = time.time()
    bar.close()
    accuracy = validate(model, tokenizer, processor, validation)
    log(f"final step {step} validation exact match {accuracy:.1%}")
    if accuracy >= best:  # keep the best periodic checkpoint if the last stretch made things worse
        save({"stage": "done", "step": step, "validation_exact_match": accuracy})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train the demo LLaVA model on generated scenes (CPU, torch backend).")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--overwrite", action="store_true",
                   help="write over a checkpoint already in --out (without it, such a directory is refused)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the training scenes")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint (its tokenizer, config and weights) instead of a random init; "
                        "use --vision-steps 0 to go straight to question answering")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared, busy CPU one thread is faster than two)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bf16: matrix products under bf16 autocast, weights and optimizer in fp32 (faster on CPUs "
                        "with AMX bf16 units, far slower on CPUs without native bf16); fp32: "
                        "everything in fp32; auto (default): bf16 where the CPU multiplies bf16 natively, else fp32")
    p.add_argument("--layers", type=int, default=12, help="decoder layers")
    p.add_argument("--hidden", type=int, default=128, help="decoder width")
    p.add_argument("--vision-hidden", type=int, default=128, help="vision tower width")
    p.add_argument("--vision-steps", type=int, default=3000, help="stage 1 steps at most")
    p.add_argument("--vision-minutes", type=float, default=6.0, help="stage 1 time budget")
    p.add_argument("--vision-lr", type=float, default=2e-3, help="stage 1 peak learning rate")
    p.add_argument("--vision-batch-size", type=int, default=32, help="stage 1 images per step")
    p.add_argument("--steps", type=int, default=20000, help="stage 2 steps at most")
    p.add_argument("--minutes", type=float, default=55.0, help="stage 2 time budget")
    p.add_argument("--lr", type=float, default=1e-3, help="stage 2 peak learning rate")
    p.add_argument("--tower-lr-scale", type=float, default=0.1, help="stage 2 vision tower lr / lr (0 freezes it)")
    p.add_argument("--batch-size", type=int, default=16, help="stage 2 images (conversations) per step")
    p.add_argument("--questions-per-image", type=int, default=10, help="short questions per conversation")
    p.add_argument("--families", nargs="+", choices=TRAINING_FAMILIES, default=list(SHORT_FAMILIES), metavar="NAME",
                   help="short-question families of the conversations, drawn uniformly; repeat a name to ask it "
                        f"more often; 'where' (\"What is the red circle at?\" -> \"top left\") is taught but not "
                        f"scored (default: {' '.join(SHORT_FAMILIES)})")
    p.add_argument("--grounding-weight", type=float, default=0.0,
                   help="weight of the auxiliary loss that reads the row and column of the objects a question names "
                        "at its last token (minilazy/demo/grounding.py); 0 (default) leaves it out")
    p.add_argument("--grounding-layer", type=int, default=8,
                   help="decoder layer at whose input the grounding loss reads the residual stream (default 8)")
    p.add_argument("--describe-prob", type=float, default=0.5,
                   help="chance a conversation is the description alone (else short questions only)")
    p.add_argument("--curriculum", type=float, default=0.3,
                   help="fraction of stage 2 over which scenes grow from 2 to 6 objects at most")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps of each stage")
    p.add_argument("--checkpoint-minutes", type=float, default=8.0, help="validate and checkpoint this often")
    p.add_argument("--validation-size", type=int, default=192, help="held-out questions of the periodic validation")
    p.add_argument("--log", default=None, help="log file (default: OUT/training_log.txt)")
    return p.parse_args(argv)


def main(argv=None, log_mode: str = "w") -> None:
    """Train as `argv` says; `log_mode="a"` appends to an existing log (the recipe's later phases)."""
    args = parse_args(argv)
    refuse_to_overwrite(Path(args.out), args.overwrite)
    args.precision = resolve_precision(args.precision)  # the log and training_info record what ran
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(args.log) if args.log else out / "training_log.txt"
    log_file = log_path.open(log_mode)

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        tqdm.write(line)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"arguments: {vars(args)}")
    if args.init_from:
        tokenizer, config_dict, weights = load_start(Path(args.init_from))
    else:
        tokenizer = build_tokenizer(tokenizer_corpus(3000, seed=args.seed))
        config_dict = demo_config(tokenizer.get_vocab_size(), tokenizer.token_to_id(IMAGE),
                                  tokenizer.token_to_id(PAD), layers=args.layers, hidden=args.hidden,
                                  vision_hidden=args.vision_hidden)
        weights = init_weights(config_dict, args.seed)
    config = parse_config(config_dict)
    if args.grounding_weight > 0 and not 0 <= args.grounding_layer < config.text.num_hidden_layers:
        raise SystemExit(f"--grounding-layer {args.grounding_layer} is not a layer of this "
                         f"{config.text.num_hidden_layers}-layer decoder")
    if config.image_tokens_per_image != IMAGE_TOKENS:
        raise ValueError(f"the config gives {config.image_tokens_per_image} image tokens, the data expects {IMAGE_TOKENS}")
    save_tokenizer(tokenizer, out, model_max_length=config.text.max_position_embeddings)
    write_preprocessor_config(out, config.vision.image_size)
    weights = {n: w.requires_grad_() for n, w in weights.items()}
    log(f"parameters: {sum(w.numel() for w in weights.values()):,}; vocabulary {tokenizer.get_vocab_size()}")
    model = Model.from_weights(config, weights, backend="torch")
    processor = ClipImageProcessor.from_config(None, config.vision.image_size)
    started = time.time()

    runs = earlier_runs(Path(args.init_from) if args.init_from else None)
    command = "python -m minilazy.demo.train " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(extra: dict) -> None:
        run = {"command": command, "arguments": vars(args), "minutes": (time.time() - started) / 60, **extra}
        save_checkpoint(out, config_dict, weights, runs + [run])
        log(f"checkpoint written to {out} ({extra})")

    if args.vision_steps > 0 and args.vision_minutes > 0:
        vision_stream = SceneStream(tokenizer, processor, args.seed, args.vision_batch_size, 0, 0.0)
        train_vision(model, weights, vision_stream, args, log)
        save({"stage": "vision", "step": 0})
    qa_stream = SceneStream(tokenizer, processor, args.seed + 1, args.batch_size, args.questions_per_image,
                            args.describe_prob, tuple(args.families))
    train_questions(model, weights, qa_stream, tokenizer, processor, save, args, log)
    log(f"done in {(time.time() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
