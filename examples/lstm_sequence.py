"""An LSTM reads a digit one row at a time: each real MNIST picture becomes a
sequence of 28 rows of 28 pixels, and the LSTM's last hidden state says which
digit it was (the sequence task of the lecture: memory across 28 steps). Prints
held-out accuracy (expected: 0.954 after the default run, 6 epochs of 8,000
digits, 7 s of CPU) and saves how the prediction firms up as the rows arrive.

    python examples/lstm_sequence.py [--quick] [--plot lstm_sequence.png]"""
import numpy as np

import nutshell as ns
from _common import data, parse, plt, save

nn, F = ns.nn, ns.nn.functional


class RowReader(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, batch_first=True)
        self.classify = nn.Linear(hidden, 10)

    def forward(self, x):                         # x: [N, 1, 28, 28]
        rows = x.squeeze(1)                       # [N, 28 steps, 28 features]
        out, (h, c) = self.lstm(rows)
        return self.classify(out)                 # logits after every row: [N, 28, 10]


def last_row_loss(logits, labels):
    return F.cross_entropy(logits[:, -1], labels)


def main():
    args = parse(__doc__, "lstm_sequence.png")
    (x, y), (xv, yv) = data(args.quick)
    ns.manual_seed(0)
    net = RowReader()
    trainer = ns.compile_training(net, example_inputs=x[:64], example_targets=y[:64],
                                  loss=last_row_loss, optimizer=ns.optim.Adam(lr=3e-3),
                                  clip_norm=1.0, threads=args.threads)
    trainer.fit(x, y, epochs=1 if args.quick else 6, batch_size=64, progress=False, log=print)
    logits = trainer.predict(xv)                  # [N, 28, 10]
    acc_by_row = (logits.argmax(2) == yv[:, None]).mean(0)
    print(f"held-out accuracy {acc_by_row[-1]:.3f} (after 14 of 28 rows: {acc_by_row[13]:.3f})")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    ax[0].imshow(xv[1, 0], cmap="gray")
    ax[0].set(title=f"read top to bottom; label {yv[1]}", xticks=[], yticks=[])
    ax[1].plot(np.arange(1, 29), acc_by_row, marker=".")
    ax[1].set(xlabel="rows read", ylabel="held-out accuracy", title="LSTM over rows of MNIST", ylim=(0, 1))
    save(fig, args.plot)


if __name__ == "__main__":
    main()
