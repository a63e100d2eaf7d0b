#!/usr/bin/env python3
"""A small real training that runs anywhere: a small neural network (2 inputs, one hidden layer) learning the two-moons problem.

Standard library only, so it runs on any host with Python 3, no GPU and no torch. It behaves like
the trainings runner is built for: a tqdm-style progress bar per epoch, a results.csv with one row
per epoch, and checkpoints `last.pt` and `best.pt` (pickled weights), each written atomically.
"""

import argparse
import csv
import math
import os
import pickle
import random
import sys
import time


def two_moons(count, noise, rng):
    points = []
    for index in range(count):
        angle = rng.uniform(0, math.pi)
        if index % 2:
            x, y, label = math.cos(angle), math.sin(angle), 0.0
        else:
            x, y, label = 1 - math.cos(angle), 0.5 - math.sin(angle), 1.0
        points.append(((x + rng.gauss(0, noise), y + rng.gauss(0, noise)), label))
    return points


class Network:
    def __init__(self, hidden, rng):
        self.w1 = [[rng.gauss(0, 1.0) for _ in range(2)] for _ in range(hidden)]
        self.b1 = [0.0] * hidden
        self.w2 = [rng.gauss(0, 1.0 / math.sqrt(hidden)) for _ in range(hidden)]
        self.b2 = 0.0

    def forward(self, point):
        hidden = [math.tanh(w[0] * point[0] + w[1] * point[1] + b) for w, b in zip(self.w1, self.b1)]
        logit = sum(w * h for w, h in zip(self.w2, hidden)) + self.b2
        return hidden, 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))

    def loss(self, point, label):
        _, p = self.forward(point)
        p = min(max(p, 1e-7), 1 - 1e-7)
        return -(label * math.log(p) + (1 - label) * math.log(1 - p))

    def step(self, batch, lr):
        """One SGD step on a batch; returns the batch's mean loss."""
        grad_w1 = [[0.0, 0.0] for _ in self.w1]
        grad_b1 = [0.0] * len(self.b1)
        grad_w2 = [0.0] * len(self.w2)
        grad_b2 = 0.0
        total = 0.0
        for point, label in batch:
            hidden, p = self.forward(point)
            total += -(label * math.log(max(p, 1e-7)) + (1 - label) * math.log(max(1 - p, 1e-7)))
            delta = p - label
            grad_b2 += delta
            for j, h in enumerate(hidden):
                grad_w2[j] += delta * h
                back = delta * self.w2[j] * (1 - h * h)
                grad_b1[j] += back
                grad_w1[j][0] += back * point[0]
                grad_w1[j][1] += back * point[1]
        scale = lr / len(batch)
        for j in range(len(self.w2)):
            self.w2[j] -= scale * grad_w2[j]
            self.b1[j] -= scale * grad_b1[j]
            self.w1[j][0] -= scale * grad_w1[j][0]
            self.w1[j][1] -= scale * grad_w1[j][1]
        self.b2 -= scale * grad_b2
        return total / len(batch)

    def state(self):
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}


def evaluate(network, points):
    loss = sum(network.loss(point, label) for point, label in points) / len(points)
    correct = sum((network.forward(point)[1] >= 0.5) == (label == 1.0) for point, label in points)
    return loss, correct / len(points)


def save_atomically(path, payload):
    temporary = path + ".tmp"
    with open(temporary, "wb") as handle:
        pickle.dump(payload, handle)
    os.replace(temporary, path)


def progress_bar(epoch, epochs, done, total, elapsed, loss):
    fraction = done / total
    filled = int(fraction * 20)
    rate = done / elapsed if elapsed > 0 else 0.0
    remaining = (total - done) / rate if rate else 0.0
    return "Epoch %d/%d: %3d%%|%s%s| %d/%d [%02d:%02d<%02d:%02d, %.2fit/s, loss=%.4f]" % (
        epoch, epochs, fraction * 100, "█" * filled, " " * (20 - filled), done, total,
        elapsed // 60, elapsed % 60, remaining // 60, remaining % 60, rate, loss,
    )


def train(args):
    rng = random.Random(args.seed)
    data = two_moons(args.samples, 0.15, rng)
    split = int(len(data) * 0.8)
    train_set, val_set = data[:split], data[split:]
    network = Network(args.hidden, rng)
    weights_dir = os.path.join(args.out, "weights")
    os.makedirs(weights_dir, exist_ok=True)
    results_path = os.path.join(args.out, "results.csv")
    with open(results_path, "w", newline="") as handle:
        csv.writer(handle).writerow(["epoch", "time", "train/loss", "val/loss", "metrics/accuracy", "lr"])
    interactive = sys.stdout.isatty()
    best = math.inf
    started = time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(train_set)
        batches = [train_set[i : i + args.batch] for i in range(0, len(train_set), args.batch)]
        lr = args.lr * (0.5 * (1 + math.cos(math.pi * (epoch - 1) / args.epochs)) * 0.9 + 0.1)
        epoch_start, running, shown = time.time(), 0.0, 0.0
        for index, batch in enumerate(batches, 1):
            running += network.step(batch, lr)
            # At most ten bar updates a second, as tqdm does: a log should not grow with the batch count.
            if (interactive and time.time() - shown >= 0.1) or index == len(batches):
                shown = time.time()
                line = progress_bar(epoch, args.epochs, index, len(batches), time.time() - epoch_start, running / index)
                sys.stdout.write(("\r" + line) if interactive else (line + "\n"))
                sys.stdout.flush()
        if interactive:
            sys.stdout.write("\n")
        val_loss, accuracy = evaluate(network, val_set)
        print("  val: loss=%.4f accuracy=%.3f" % (val_loss, accuracy), flush=True)
        with open(results_path, "a", newline="") as handle:
            row = [epoch, round(time.time() - started, 3), round(running / len(batches), 5), round(val_loss, 5)]
            csv.writer(handle).writerow(row + [round(accuracy, 5), round(lr, 6)])
        checkpoint = {"epoch": epoch, "val_loss": val_loss, "accuracy": accuracy, "model": network.state()}
        save_atomically(os.path.join(weights_dir, "last.pt"), checkpoint)
        if val_loss < best:
            best = val_loss
            save_atomically(os.path.join(weights_dir, "best.pt"), checkpoint)
    print("%d epochs completed in %.1fs; best val loss %.4f" % (args.epochs, time.time() - started, best))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", 10)))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo")
    train(parser.parse_args())


if __name__ == "__main__":
    main()
