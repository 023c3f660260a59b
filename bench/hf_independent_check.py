"""Score a Hugging Face export on CoNLL-2003 or SQuAD v1.1 with transformers alone (no project code).

The independent side of bench/ner_squad_runs.sh: a checkpoint exported with
`python -m src.hf_convert export` is loaded by transformers (AutoModelForTokenClassification or
AutoModelForQuestionAnswering, from the folder's config.json), tokenized by the tokenizer written in
the same folder, and scored by seqeval or the official SQuAD v1.1 formula, so the project's own
evaluation of the same checkpoint can be compared with it.

  NER: one CoNLL file (`word ... TAG` a line, blank line between sentences, -DOCSTART- skipped);
       each word's tag is the arg-max label at its first word piece (BERT's NER scoring; a word the
       tokenizer turns into no piece, control characters only, is read as [UNK]); a sentence
       longer than max_seq_length - 2 pieces is scored in consecutive word-boundary chunks; entity
       precision / recall / F1 by seqeval's default (conlleval) mode on IOB2 tags.
  QA:  one SQuAD v1.1 JSON; `[CLS] question [SEP] window [SEP]` inputs, the question cut to
       max_query_length pieces, windows of the context doc_stride pieces apart; the answer is the
       span (start <= end, at most max_answer_length pieces, both in the context) with the highest
       start + end logit over all windows (every pair, or with --n_best_size only the highest start
       and end logits of each window), cut from the context by the fast tokenizer's offsets;
       exact match and F1 with SQuAD's normalisation (lower case, no punctuation, no a/an/the,
       single spaces), the maximum over the reference answers.

Scores are fractions in [0, 1], as the project logs them.

  python bench/hf_independent_check.py --model_dir OUT/conll/hf_student --data conll2003/dev.txt
  python bench/hf_independent_check.py --model_dir OUT/squad/hf_student --data squad/dev-v1.1-subset.json \
      --max_seq_length 256 --doc_stride 128 [--json scores.json]
"""
import argparse
import collections
import json
import re
import string
import sys
from pathlib import Path

import numpy as np
import torch
from seqeval.metrics import f1_score, precision_score, recall_score
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForTokenClassification, AutoTokenizer

PUNCTUATION = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")
IOB_TAG = re.compile(r"O|[BI]-\S+")


def read_conll(path):
    """[(words, tags)] of a CoNLL file: first column the word, last the tag."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if len(fields) < 2 or not IOB_TAG.fullmatch(fields[-1]):
                raise ValueError(f"{path}:{line_no}: not `word ... TAG` with an IOB2 tag: is this a CoNLL file?")
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences


def word_chunks(piece_counts, room):
    """[(first word, end word)]: consecutive words whose pieces fit in `room` (a longer word alone)."""
    chunks, start, used = [], 0, 0
    for i, count in enumerate(piece_counts):
        if used + count > room and i > start:
            chunks.append((start, i))
            start, used = i, 0
        used += count
    chunks.append((start, len(piece_counts)))
    return chunks


def batched_logits(model, features, batch_size, pad_id):
    """Run `model` over [(input_ids, token_type_ids)] in batches padded to their longest row; yields outputs."""
    for first in range(0, len(features), batch_size):
        rows = features[first:first + batch_size]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        token_types = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, types) in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            token_types[r, :len(ids)] = torch.tensor(types)
            mask[r, :len(ids)] = 1
        with torch.inference_mode():
            yield model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_types)


def score_ner(model_dir, data, max_seq_length, batch_size):
    """Entity precision, recall and F1 of the exported token classifier on a CoNLL file."""
    config = AutoConfig.from_pretrained(model_dir)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if not all(label == "O" or label[:2] in ("B-", "I-") for label in labels):
        raise ValueError(f"{model_dir}: labels {labels} are not IOB tags: export the checkpoint with its label names")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    sentences = read_conll(data)
    features, owners, no_piece = [], [], 0  # owners: (sentence, first word, end word, first pieces) per feature
    for index, (words, _) in enumerate(sentences):
        pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
        no_piece += sum(not ids for ids in pieces)
        pieces = [ids or [tokenizer.unk_token_id] for ids in pieces]  # a word of control characters only
        for start, end in word_chunks([len(ids) for ids in pieces], max_seq_length - 2):
            ids = [tokenizer.cls_token_id]
            firsts = []
            for word_pieces in pieces[start:end]:
                firsts.append(len(ids))
                ids.extend(word_pieces[:max_seq_length - 2])
            ids = ids[:max_seq_length - 1] + [tokenizer.sep_token_id]
            features.append((ids, [0] * len(ids)))
            owners.append((index, start, end, firsts))
    predicted = [["O"] * len(words) for words, _ in sentences]
    feature = 0
    for output in batched_logits(model, features, batch_size, tokenizer.pad_token_id):
        label_ids = output.logits.argmax(-1).numpy()
        for row in label_ids:
            index, start, end, firsts = owners[feature]
            for word, position in zip(range(start, end), firsts):
                if position < max_seq_length - 1:
                    predicted[index][word] = labels[row[position]]
            feature += 1
    gold = [tags for _, tags in sentences]
    return {"precision": precision_score(gold, predicted), "recall": recall_score(gold, predicted),
            "f1": f1_score(gold, predicted), "sentences": len(sentences), "features": len(features),
            "words_without_pieces": no_piece}


# Written again on purpose, beside src/squad_metrics.py: the check must share no code with what it checks.
def normalize_answer(text):
    """SQuAD v1.1: lower case, punctuation and the articles a/an/the removed, whitespace collapsed."""
    text = "".join(c for c in text.lower() if c not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def token_f1(prediction, reference):
    """Bag-of-tokens F1 of two normalised answers (0 when they share no token)."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def read_squad(path):
    """[(id, question, context, [answer texts])] of a SQuAD v1.1 file."""
    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
        questions = [(qa["id"], qa["question"], paragraph["context"], [a["text"] for a in qa["answers"]])
                     for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not SQuAD v1.1 JSON ({type(err).__name__}: {err})") from None
    if not questions:
        raise ValueError(f"{path}: no questions")
    if any(not answers for *_, answers in questions):
        raise ValueError(f"{path}: a question without reference answers")
    return questions


def window_starts(context_length, room, doc_stride):
    """First context piece of each window: doc_stride apart, the last one reaching the context's end."""
    starts = [0]
    while starts[-1] + room < context_length:
        starts.append(starts[-1] + min(room, doc_stride))
    return starts


def best_window_span(start_logits, end_logits, first, length, max_answer_length, n_best_size, real_length):
    """(score, start, end) of the best span among positions first..first+length-1 (end inclusive), or
    None when no pair is allowed.

    n_best_size 0: every pair of context positions; else only the n_best_size highest start and end
    logits among the window's real_length tokens (BERT's run_squad decoding) are paired.
    """
    starts = start_logits[first:first + length].astype(np.float64)
    ends = end_logits[first:first + length].astype(np.float64)
    if n_best_size:
        for logits, row in ((start_logits, starts), (end_logits, ends)):
            kept = np.argsort(-logits[:real_length], kind="stable")[:n_best_size] - first
            row[np.setdiff1d(np.arange(length), kept)] = -np.inf
    scores = starts[:, None] + ends[None, :]
    i, j = np.indices(scores.shape)
    scores[(j < i) | (j - i >= max_answer_length)] = -np.inf
    s, e = np.unravel_index(scores.argmax(), scores.shape)
    return None if scores[s, e] == -np.inf else (scores[s, e], s, e)


def score_squad(model_dir, data, max_seq_length, doc_stride, max_query_length, max_answer_length, n_best_size,
                batch_size):
    """Exact match and F1 of the exported question-answering model on a SQuAD v1.1 file."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ValueError(f"{model_dir}: the tokenizer is not a fast one: character offsets are needed")
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    questions = read_squad(data)
    features, owners = [], []  # owners: (question, context piece offsets of the window, first context position)
    for index, (_, question, context, _) in enumerate(questions):
        query = tokenizer(question, add_special_tokens=False)["input_ids"][:max_query_length]
        encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        pieces, offsets = encoded["input_ids"], encoded["offset_mapping"]
        room = max_seq_length - len(query) - 3
        for start in window_starts(len(pieces), room, doc_stride):
            window = pieces[start:start + room]
            ids = [tokenizer.cls_token_id, *query, tokenizer.sep_token_id, *window, tokenizer.sep_token_id]
            features.append((ids, [0] * (len(query) + 2) + [1] * (len(window) + 1)))
            owners.append((index, offsets[start:start + room], len(query) + 2))
    best = {}
    feature = 0
    for output in batched_logits(model, features, batch_size, tokenizer.pad_token_id):
        for start_logits, end_logits in zip(output.start_logits.numpy(), output.end_logits.numpy()):
            index, offsets, first = owners[feature]
            span = best_window_span(start_logits, end_logits, first, len(offsets), max_answer_length,
                                    n_best_size, len(features[feature][0]))
            if span and (index not in best or span[0] > best[index][0]):
                best[index] = (span[0], offsets[span[1]][0], offsets[span[2]][1])
            feature += 1
    exact = overlap = 0.0
    for index, (_, _, context, answers) in enumerate(questions):
        prediction = context[best[index][1]:best[index][2]] if index in best else ""
        exact += max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
        overlap += max(token_f1(prediction, a) for a in answers)
    return {"exact_match": exact / len(questions), "f1": overlap / len(questions), "questions": len(questions),
            "features": len(features)}


def main(argv=None):
    """Command line: score one export, print the scores, optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model_dir", required=True, help="a folder written by `python -m src.hf_convert export`")
    parser.add_argument("--data", required=True, help="CoNLL dev txt (token classifier) or SQuAD v1.1 json (QA model)")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--doc_stride", type=int, default=128, help="QA: pieces between window starts")
    parser.add_argument("--max_query_length", type=int, default=64, help="QA: question pieces kept")
    parser.add_argument("--max_answer_length", type=int, default=30, help="QA: longest answer in pieces")
    parser.add_argument("--n_best_size", type=int, default=0,
                        help="QA: pair only the N highest start and end logits of a window (BERT's run_squad: 20); "
                             "0 (default): every pair")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    args = parser.parse_args(argv)
    try:
        for path in (Path(args.model_dir) / "config.json", Path(args.data)):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        architectures = AutoConfig.from_pretrained(args.model_dir).architectures or []
        if "BertForTokenClassification" in architectures:
            scores = score_ner(args.model_dir, args.data, args.max_seq_length, args.batch_size)
            line = (f"entities: precision {scores['precision']:.6f}, recall {scores['recall']:.6f}, "
                    f"f1 {scores['f1']:.6f} on {scores['sentences']} sentences")
        elif "BertForQuestionAnswering" in architectures:
            scores = score_squad(args.model_dir, args.data, args.max_seq_length, args.doc_stride,
                                 args.max_query_length, args.max_answer_length, args.n_best_size, args.batch_size)
            line = (f"squad: exact_match {scores['exact_match']:.6f}, f1 {scores['f1']:.6f} on "
                    f"{scores['questions']} questions ({scores['features']} windows)")
        else:
            raise ValueError(f"{args.model_dir}: architectures {architectures} hold neither BertForTokenClassification "
                             "nor BertForQuestionAnswering")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
