"""Small data for the shipped demo, written by this project: a film-review corpus and a review
sentiment task in the SST-2 file layout (`sentence<TAB>label` with a header).

The sentences are composed from phrase lists with a seeded generator, so every run writes the same
files; the task needs real reading (negations flip the label) but a pretrained teacher learns it fast.

python -m src.demo_data --output_dir DIR [--train 800 --dev 200 --corpus_docs 300 --seed 7]
"""
import argparse
import random
from pathlib import Path

from src.atomic_files import write_text_atomically
from src.cli import run_cli

SUBJECTS = ["the film", "this movie", "the story", "the acting", "the script", "the director's new work",
            "the soundtrack", "the final act", "the cast", "the dialogue", "the plot", "the cinematography",
            "the lead performance", "the ending", "the pacing", "this sequel", "the documentary"]
POSITIVE = ["wonderful", "moving", "clever", "beautifully made", "funny", "gripping", "charming", "brilliant",
            "heartfelt", "a delight", "sharp and witty", "genuinely touching", "thrilling", "superb"]
NEGATIVE = ["dull", "tedious", "clumsy", "a mess", "boring", "lifeless", "predictable", "painfully slow",
            "shallow", "forgettable", "badly written", "a chore to sit through", "flat", "awful"]
OPENERS = ["", "honestly, ", "in the end, ", "to be fair, ", "frankly, ", "for me, ", "overall, "]
LINKS = ["is", "was", "felt", "seemed", "turned out to be"]
NEGATED = {"is": "is not", "was": "was not", "felt": "never felt", "seemed": "never seemed",
           "turned out to be": "never turned out to be"}
FILLERS = ["The audience at the screening was quiet.", "It runs a little over two hours.",
           "The studio released it in the autumn.", "Critics had mixed expectations.",
           "Much of it was shot on location.", "The trailer gave away little.",
           "It is the second film from this team.", "Several scenes were filmed at night."]


def review(rng):
    """One review sentence and its label (1 positive, 0 negative)."""
    positive = rng.random() < 0.5
    negate = rng.random() < 0.25
    words = POSITIVE if positive != negate else NEGATIVE  # a negated phrase says the opposite
    link = rng.choice(LINKS)
    sentence = f"{rng.choice(OPENERS)}{rng.choice(SUBJECTS)} {NEGATED[link] if negate else link} {rng.choice(words)}"
    if rng.random() < 0.3:
        sentence += f", and {rng.choice(SUBJECTS)} {rng.choice(LINKS)} {rng.choice(POSITIVE if positive else NEGATIVE)}"
    return sentence[0].upper() + sentence[1:] + ".", int(positive)


def write_task(path, count, rng):
    rows = ["sentence\tlabel"] + ["\t".join((text, str(label))) for text, label in (review(rng) for _ in range(count))]
    write_text_atomically(path, "\n".join(rows) + "\n")


def write_corpus(path, documents, rng):
    """Documents of a few review and filler sentences, separated by blank lines."""
    lines = []
    for _ in range(documents):
        lines += [review(rng)[0] if rng.random() < 0.7 else rng.choice(FILLERS) for _ in range(rng.randint(3, 8))]
        lines.append("")
    write_text_atomically(path, "\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the demo's corpus and sentiment task.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--corpus_docs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    write_corpus(out / "corpus.txt", args.corpus_docs, rng)
    write_task(out / "train.tsv", args.train, rng)
    write_task(out / "dev.tsv", args.dev, rng)
    print(f"wrote {out}/corpus.txt ({args.corpus_docs} documents), train.tsv ({args.train}), dev.tsv ({args.dev})")


if __name__ == "__main__":
    run_cli(main)
