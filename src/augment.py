"""TinyBERT's task-specific data augmentation: every training example expanded into N copies whose
words are replaced by similar ones.

Reference: Jiao et al. 2019, "TinyBERT: Distilling BERT for Natural Language Understanding",
section 3.3 and Algorithm 1. Each word is replaced, with probability p, by one of K candidates: for a
single-piece word the K best predictions of a masked language model at its position, for a
multi-piece word its K nearest neighbours in a word-embedding space (GloVe in the paper). The
paper's defaults: N = 20 copies, p = 0.4, K = 15.

Here:
- The masked LM is the model's own masked-LM head (`BertForMaskedLM`; `hf_convert import` keeps the
  head of a Hugging Face BertForMaskedLM or BertForPreTraining). A model without one, such as the
  shipped MiniLM teacher, gives every word embedding neighbours.
- The embedding space is the model's own input word embeddings, by cosine similarity (a multi-piece
  word is the mean of its pieces), so augmentation needs nothing but the teacher.
- A word is what the model's tokenizer splits on whitespace and punctuation; words without a letter,
  [UNK] words and stop words (--stop_words, a file of one word a line, none by default; the TinyBERT
  authors' released data_augmentation.py leaves NLTK's English stop words unreplaced) stay as they
  are. Candidates are whole-word vocabulary entries: never a special token ([CLS], [MASK],
  [unused0]...), never a ## continuation piece, never one without a letter, never the word itself.
- Speed: the masked sentences of a chunk of examples go through the model in batches, one forward
  pass for all masked positions of a batch, through one graph compiled once for all shapes; the
  neighbours of all distinct new words of a chunk come from one matrix product and are cached.
- Determinism: example i's copies come from a generator seeded with (seed, i), and each word's
  candidates are kept in token-id order, so the output depends neither on batch sizes nor on score
  rounding.
- Output: the input's rows and columns as TSV, each row followed by its augmented copies (copies
  equal to the row or to an earlier copy are dropped: they would only repeat teacher passes), with
  two more columns: `source_example_id` (the row's example id in the input, as glue_to_records
  numbers rows) and `aug_index` (0 for the original row, 1.. for copies). Pairs keep their labels;
  a copy changes both sentences (pair_mode "both") or one, the first and the second in turn (pair_mode
  "one", as the TinyBERT authors' released data_augmentation.py does: it writes copies of one sentence
  with the other kept). `python -m src.glue_to_records --task TASK` converts the file; --records_file
  does it in the same run.

Usage:
  python -m src.augment --task sst2 --input_file SST-2/train.tsv --output_file sst2_aug.tsv --model_dir teacher/ \
      [--num_aug 20] [--replace_prob 0.4] [--num_candidates 15] [--seed 1] [--candidates auto|mlm|embeddings] \
      [--pair_mode both|one] [--stop_words stop_words.txt] \
      [--records_file data/sst2_aug.mindrecord --seq_length 128 [--format tfrecord]]
"""
import argparse
import collections
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from tqdm import tqdm

from src.atomic_files import atomic_path
from src.checkpoint import ENCODER_PREFIX, assign_parameters, load_checkpoint, named_parameters, \
    recorded_config, split_metadata
from src.cli import check_distinct_files, require_device, require_file, run_cli
# _example is the converter's own row check, so that every row written here converts.
from src.glue_to_records import TASKS, BadRow, _example, convert, read_rows
from src.records_writer import add_output_args
from src.tinybert_model import MLM_HEAD_PREFIX, BertConfig, BertForMaskedLM
from src.tokenization import WordPieceTokenizer, load_vocab, str2bool

CANDIDATE_SOURCES = ("auto", "mlm", "embeddings")
PAIR_MODES = ("both", "one")
WORD_EMBEDDINGS = ENCODER_PREFIX + "bert_embedding_lookup.embedding_table"
SOURCE_COLUMN, COPY_COLUMN = "source_example_id", "aug_index"
EXAMPLES_PER_CHUNK = 1024  # examples whose candidates are computed together
QUERY_ROWS = 1024  # words scored in one matrix product: 1024 x 30522 float32 scores = 125 MB


@dataclasses.dataclass(frozen=True)
class Segment:
    """One sentence split into words as the model's tokenizer splits it.

    Attributes:
        text (str): the sentence as given.
        spans (tuple[tuple[int, int]]): each word's (start, end) character offsets in `text`.
        pieces (tuple[tuple[int, ...]]): each word's WordPiece ids.
    """
    text: str
    spans: tuple
    pieces: tuple


def whole_word_tokens(tokens):
    """Boolean mask (len(tokens),): the entries that may replace a word.

    A bracketed entry ([CLS], [MASK], [unused0]) is special, a `##` entry continues a word, and an
    entry without a letter (punctuation, digits) would not keep the sentence's sense.
    """
    return np.array([not (token.startswith("[") and token.endswith("]")) and not token.startswith("##")
                     and any(char.isalpha() for char in token) for token in tokens], dtype=bool)


def top_k_sorted(scores, k):
    """Column indices (N, k) of the k largest entries of each row of `scores` (N, M), each row in
    increasing index order (the sampling order; see the module docstring)."""
    return np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)


class MaskedWordScores(nn.Cell):
    """Vocabulary scores at one position of each sentence: the encoder runs over the whole batch,
    the masked-LM head only at the masked positions (a (B, H) x (H, V) product instead of (B, T, V)).

    Inputs: input_ids, attention_mask, token_type_ids (B, T) int32; position_weights (B, T) float32,
    one-hot at each sentence's masked position. Returns scores (B, vocab_size) float32.
    """

    def __init__(self, mlm):
        super().__init__(auto_prefix=False)
        self.mlm = mlm

    def construct(self, input_ids, attention_mask, token_type_ids, position_weights):
        sequence_output = self.mlm.bert(input_ids, attention_mask, token_type_ids)[0]
        hidden = ops.bmm(position_weights.expand_dims(1), sequence_output).squeeze(1)  # (B, H)
        return self.mlm.predict(hidden)


class Augmenter:
    """Word candidates and augmented copies with one model's vocabulary, embeddings and masked LM.

    Args:
        model_dir (str or Path): a directory as `python -m src.hf_convert import` writes it: model.ckpt,
            vocab.txt, and tokenizer_config.json for the casing.
        num_candidates (int, default 15): K, candidates per word.
        candidates (str, default "auto"): "auto" asks the masked LM for single-piece words when the
            model has the head, "mlm" requires the head, "embeddings" uses embedding neighbours only.
        seq_length (int, default 128): tokens of context the masked LM sees, [CLS] and [SEP] included;
            a word beyond it gets embedding neighbours.
        batch_size (int, default 64): masked sentences per forward pass.
        do_lower_case (bool or None, default None): as WordPieceTokenizer; None reads the model's
            tokenizer_config.json.
        stop_words (iterable of str, default ()): words never replaced, matched after the tokenizer's
            normalisation (so in any case for an uncased model); a text that splits into several words
            ("don't") makes each of them a stop word.
    Raises:
        FileNotFoundError: model.ckpt or vocab.txt is missing.
        ValueError: bad sizes, a checkpoint without word embeddings, "mlm" without a masked-LM head.
    """

    def __init__(self, model_dir, num_candidates=15, candidates="auto", seq_length=128, batch_size=64,
                 do_lower_case=None, stop_words=()):
        for name, value, least in (("num_candidates", num_candidates, 1), ("seq_length", seq_length, 3),
                                   ("batch_size", batch_size, 1)):
            if value < least:
                raise ValueError(f"--{name} is {value}: it must be at least {least}")
        if candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"--candidates {candidates!r} is not one of {', '.join(CANDIDATE_SOURCES)}")
        model_dir = Path(model_dir)
        checkpoint = model_dir / "model.ckpt"
        require_file(checkpoint, "model checkpoint", "--model_dir takes a directory that "
                     "`python -m src.hf_convert import` wrote")
        vocab = load_vocab(model_dir / "vocab.txt")
        self.tokenizer = WordPieceTokenizer(model_dir / "vocab.txt", do_lower_case)
        self.tokens = sorted(vocab, key=vocab.get)
        tensors, metadata = split_metadata(load_checkpoint(checkpoint))
        if WORD_EMBEDDINGS not in tensors:
            raise ValueError(f"{checkpoint} holds no word embeddings ({WORD_EMBEDDINGS}): give a BERT model")
        table = tensors[WORD_EMBEDDINGS].asnumpy().astype(np.float32)
        if len(self.tokens) > table.shape[0]:
            raise ValueError(f"{model_dir / 'vocab.txt'} has {len(self.tokens)} tokens but the model only "
                             f"{table.shape[0]} embeddings: is it the model's own vocabulary?")
        # Over the embedding rows: ids past the vocabulary's end are never a word either.
        self.allowed = np.zeros(table.shape[0], dtype=bool)
        self.allowed[:len(self.tokens)] = whole_word_tokens(self.tokens)
        self.candidate_ids = np.flatnonzero(self.allowed)
        if len(self.candidate_ids) <= num_candidates:
            raise ValueError(f"the vocabulary has {len(self.candidate_ids)} whole-word entries, too few for "
                             f"--num_candidates {num_candidates}: lower it")
        self.num_candidates, self.seq_length, self.batch_size = num_candidates, seq_length, batch_size
        self.embeddings = table
        candidate_vectors = table[self.candidate_ids]
        self.unit_candidates = candidate_vectors / np.maximum(
            np.linalg.norm(candidate_vectors, axis=1, keepdims=True), 1e-12)
        self.column_of = np.full(table.shape[0], -1)
        self.column_of[self.candidate_ids] = np.arange(len(self.candidate_ids))
        self.neighbour_cache = {}  # word's piece ids -> candidate ids
        self.mask_id = vocab.get("[MASK]")
        # As piece ids, so that the tokenizer's casing and accent handling decide what matches.
        self.stop_pieces = {pieces for segment in self.split(list(stop_words)) for pieces in segment.pieces}
        self.counts = collections.Counter()  # words served by each source, for the summary
        has_head = any(name.startswith(MLM_HEAD_PREFIX) for name in tensors)
        if candidates == "mlm" and not has_head:
            raise ValueError(f"{checkpoint} has no masked-LM head: use --candidates embeddings (or auto), or import "
                             "a Hugging Face BertForMaskedLM, whose head `hf_convert import` keeps")
        self.scorer = None
        if has_head and candidates != "embeddings":
            self.scorer = self._build_scorer(tensors, metadata, model_dir)

    def _build_scorer(self, tensors, metadata, model_dir):
        """The masked-LM scorer, compiled once for every batch size and sequence length."""
        if self.mask_id is None:
            raise ValueError(f"{model_dir / 'vocab.txt'} has no [MASK] token for the masked LM: use --candidates "
                             "embeddings")
        config = recorded_config(metadata) or BertConfig.from_json_file(model_dir / "config.json")
        mlm = BertForMaskedLM(config.for_inference().for_dynamic_shapes())
        # The pooler plays no part in word prediction, and a BertForMaskedLM imported from HF has none.
        assign_parameters(named_parameters(mlm), tensors, f"checkpoint {model_dir / 'model.ckpt'}",
                          allow_missing=(ENCODER_PREFIX + "dense.",))
        scorer = MaskedWordScores(mlm)
        scorer.set_train(False)
        # Dynamic shapes: a graph compiled per (batch, length) would cost seconds for each new shape.
        scorer.set_inputs(*(ms.Tensor(shape=[None, None], dtype=dtype)
                            for dtype in (ms.int32, ms.int32, ms.int32, ms.float32)))
        return scorer

    def split(self, texts):
        """Segments of `texts` (list[str]), with words and pieces exactly as the converters produce them.

        The tokenizer's own pipeline (normaliser, whitespace-and-punctuation pre-tokeniser, WordPiece)
        is used, so offsets point into the text as given.
        """
        encodings = self.tokenizer._tokenizer.encode_batch(list(texts), add_special_tokens=False)  # noqa: SLF001
        segments = []
        for text, encoding in zip(texts, encodings):
            spans, pieces, previous = [], [], None
            for piece, word, (start, end) in zip(encoding.ids, encoding.word_ids, encoding.offsets):
                if word != previous:
                    spans.append([start, end])
                    pieces.append([piece])
                    previous = word
                else:
                    spans[-1][1] = end
                    pieces[-1].append(piece)
            segments.append(Segment(text, tuple(map(tuple, spans)), tuple(map(tuple, pieces))))
        return segments

    def _replaceable(self, segment, index):
        start, end = segment.spans[index]
        pieces = segment.pieces[index]
        return (pieces != (self.tokenizer.unk_id,) and pieces not in self.stop_pieces
                and any(char.isalpha() for char in segment.text[start:end]))

    def candidates(self, examples):
        """Candidate token ids of every replaceable word of `examples`.

        Single-piece words get the masked LM's predictions when the model has the head (and the word
        lies within seq_length); the others get embedding neighbours.

        Args:
            examples (list[tuple[Segment, ...]]): one segment per sentence (two for pairs).
        Returns:
            list (per example) of lists (per segment) of {word index: int array (K,)}, ids increasing.
        """
        requests = [(e, s, w) for e, example in enumerate(examples) for s, segment in enumerate(example)
                    for w in range(len(segment.pieces)) if self._replaceable(segment, w)]
        predicted = {}
        if self.scorer is not None:
            predicted = self.mlm_candidates(examples, [(e, s, w) for e, s, w in requests
                                                       if len(examples[e][s].pieces[w]) == 1])
        rest = [request for request in requests if request not in predicted]
        neighbours = self.embedding_neighbours([examples[e][s].pieces[w] for e, s, w in rest])
        found = [[{} for _ in example] for example in examples]
        for (e, s, w), ids in [*predicted.items(), *zip(rest, neighbours)]:
            found[e][s][w] = ids
        self.counts["mlm"] += len(predicted)
        self.counts["embeddings"] += len(rest)
        return found

    def embedding_neighbours(self, words):
        """The K whole-word entries nearest to each word by cosine similarity of input embeddings.

        Words not seen before are scored together, QUERY_ROWS per matrix product, and remembered.

        Args:
            words (list[tuple[int, ...]]): each word's piece ids; a multi-piece word is represented by
                the mean of its pieces' embeddings.
        Returns:
            list of int arrays (K,): token ids in increasing order, never the word's own id.
        """
        new = list(dict.fromkeys(word for word in words if word not in self.neighbour_cache))
        for start in range(0, len(new), QUERY_ROWS):
            batch = new[start:start + QUERY_ROWS]
            vectors = np.stack([self.embeddings[list(word)].mean(axis=0) for word in batch])
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            scores = vectors @ self.unit_candidates.T  # (words, whole-word entries)
            own = [(row, self.column_of[word[0]]) for row, word in enumerate(batch)
                   if len(word) == 1 and self.column_of[word[0]] >= 0]
            if own:
                rows, columns = zip(*own)
                scores[list(rows), list(columns)] = -np.inf
            self.neighbour_cache.update(zip(batch, self.candidate_ids[top_k_sorted(scores, self.num_candidates)]))
        return [self.neighbour_cache[word] for word in words]

    def mlm_candidates(self, examples, requests):
        """The masked LM's K best whole-word predictions for single-piece words, each masked in its
        example's full context (both sentences of a pair), batch_size masked sentences per forward pass.

        Args:
            examples (list[tuple[Segment, ...]]): as `candidates`.
            requests (list[tuple[int, int, int]]): (example, segment, word index) of single-piece words.
        Returns:
            dict {request: int array (K,)}, ids increasing, never the word's own id; a request whose
            word lies beyond seq_length (the longer sentence is cut first) is absent.
        """
        flat = {e: [[piece for word in segment.pieces for piece in word] for segment in examples[e]]
                for e in {e for e, _, _ in requests}}
        inputs = []
        for e, s, w in requests:
            segments = [list(ids) for ids in flat[e]]
            segments[s][sum(len(word) for word in examples[e][s].pieces[:w])] = self.mask_id
            inputs.append(segments)
        # Sentences of similar length share a batch, so little of it is padding.
        order = sorted(range(len(requests)), key=lambda i: sum(map(len, inputs[i])))
        found = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            ids_a = [inputs[i][0] for i in batch]
            ids_b = [inputs[i][1] if len(inputs[i]) == 2 else None for i in batch]
            length = max(sum(map(len, inputs[i])) + len(inputs[i]) + 1 for i in batch)  # [CLS] and [SEP]s
            arrays = self.tokenizer.build_inputs(ids_a, ids_b, min(length, self.seq_length))
            masked = arrays[0] == self.mask_id  # (B, T); a row without one lost its word to truncation
            scores = self.scorer(*(ms.Tensor(array) for array in arrays),
                                 ms.Tensor(masked.astype(np.float32))).asnumpy()
            scores[:, ~self.allowed] = -np.inf
            own = [examples[e][s].pieces[w][0] for e, s, w in (requests[i] for i in batch)]
            scores[np.arange(len(batch)), own] = -np.inf
            top = top_k_sorted(scores, self.num_candidates)
            for row, i in enumerate(batch):
                if masked[row].any():
                    found[requests[i]] = top[row]
        return found

    def copies(self, example, candidates, example_id, num_aug, replace_prob, seed, pair_mode="both"):
        """Up to `num_aug` distinct augmented copies of one example (Algorithm 1 of the paper).

        Each replaceable word is replaced with probability `replace_prob` by one of its candidates,
        drawn uniformly; the draws come from a generator seeded with (seed, example_id). With
        pair_mode "one", copy d of a pair replaces words in its sentence d % 2 only (the same draws,
        the other sentence's left out), so the pair's relation is changed from one side at a time.

        Args:
            example (tuple[Segment, ...]): the example's sentences.
            candidates (list[dict[int, np.ndarray]]): its entry of `candidates()`.
            example_id (int): the example's id in its file.
            num_aug (int): N, copies drawn.
            replace_prob (float): p.
            seed (int): the run's seed.
            pair_mode (str, default "both"): one of PAIR_MODES; single sentences ignore it.
        Returns:
            list[tuple[str, ...]]: each copy's sentences; none equal to the example or to an earlier copy.
        """
        slots = [(s, w, ids) for s, found in enumerate(candidates) for w, ids in sorted(found.items())]
        if not slots:
            return []
        rng = np.random.default_rng([seed, example_id])
        replace = rng.random((num_aug, len(slots))) < replace_prob
        if pair_mode == "one":
            sentence = np.array([s for s, _, _ in slots])
            replace &= sentence[None, :] == (np.arange(num_aug) % len(example))[:, None]
        choice = rng.integers(0, [len(ids) for _, _, ids in slots], size=(num_aug, len(slots)))
        seen, copies = {tuple(segment.text for segment in example)}, []
        for draw in range(num_aug):
            replacements = [{} for _ in example]
            for slot in np.flatnonzero(replace[draw]):
                s, w, ids = slots[slot]
                replacements[s][w] = self.tokens[ids[choice[draw, slot]]]
            copy = tuple(render(segment, words) for segment, words in zip(example, replacements))
            if copy not in seen:
                seen.add(copy)
                copies.append(copy)
        return copies


def render(segment, replacements):
    """The segment's text with words replaced ({word index: token}), everything else kept as written."""
    text, parts, last = segment.text, [], 0
    for index in sorted(replacements):
        start, end = segment.spans[index]
        token = replacements[index]
        # A word can touch a letter with no space between (a CJK character is a word of its own):
        # a space keeps the replacement a separate word.
        if start > 0 and text[start - 1].isalnum():
            token = " " + token
        if end < len(text) and text[end].isalnum():
            token += " "
        parts += [text[last:start], token]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def read_stop_words(path):
    """The words of a stop-word file: one a line, blank lines and lines starting with # ignored.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no word.
    """
    require_file(path, "stop-word file")
    with open(path, encoding="utf-8-sig") as f:
        words = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not words:
        raise ValueError(f"--stop_words {path} holds no word: give one word a line")
    return words


def check_options(input_file, output_file, task, num_aug, replace_prob, pair_mode="both"):
    """Raises ValueError or FileNotFoundError, naming the fix, for options augment_file cannot run with."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r} is not a GLUE task ({', '.join(TASKS)})")
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"--pair_mode {pair_mode!r} is not one of {', '.join(PAIR_MODES)}")
    if num_aug < 1:
        raise ValueError(f"--num_aug is {num_aug}: give the number of copies per example, at least 1")
    if not 0.0 < replace_prob <= 1.0:
        raise ValueError(f"--replace_prob is {replace_prob}: give a probability in (0, 1] (the paper uses 0.4)")
    require_file(input_file, "input file")
    if Path(input_file).suffix.lower() in (".csv", ".jsonl"):
        raise ValueError(f"{input_file}: augmentation reads the GLUE .tsv files of the task")
    if Path(output_file).suffix.lower() in (".csv", ".jsonl"):
        raise ValueError(f"--output_file {output_file} is written as TSV: give it a .tsv name")
    check_distinct_files({"--input_file": input_file, "--output_file": output_file})


def augment_file(augmenter, input_file, task, output_file, num_aug=20, replace_prob=0.4, seed=1,
                 skip_bad_rows=False, progress=True, pair_mode="both"):
    """Write `input_file`'s rows, each followed by its augmented copies, as TSV (see the module docstring).

    The file is written under a temporary name beside `output_file` and renamed when complete.

    Args:
        augmenter (Augmenter): candidates and copies.
        input_file (str or Path): the task's GLUE .tsv file.
        task (str): a key of glue_to_records.TASKS.
        output_file (str or Path): the .tsv to write.
        num_aug (int, default 20): N, copies drawn per example (fewer are written when some repeat).
        replace_prob (float, default 0.4): p, the probability that a word is replaced.
        seed (int, default 1): copies depend only on it and the example's id.
        skip_bad_rows (bool, default False): leave out, and count, rows the converter would reject.
        progress (bool, default True): show a progress bar on stderr.
        pair_mode (str, default "both"): a pair's copies change both sentences, or one in turn ("one").
    Returns:
        dict: examples, copies, skipped (rows), seconds.
    Raises:
        ValueError: bad options, a bad row (without skip_bad_rows), no examples.
        FileNotFoundError: no input file.
    """
    check_options(input_file, output_file, task, num_aug, replace_prob, pair_mode)
    spec = TASKS[task]
    columns = [column for column in (spec.text_a, spec.text_b) if column is not None]
    start_time = time.perf_counter()
    with open(input_file, "rb") as f:
        total = sum(1 for line in f if line.strip()) - int(spec.has_header)
    totals = collections.Counter()
    pending, header = [], None

    def flush(out):
        segments = iter(augmenter.split([text for _, _, texts in pending for text in texts]))
        examples = [tuple(next(segments) for _ in texts) for _, _, texts in pending]
        for (example_id, fields, texts), example, found in zip(pending, examples, augmenter.candidates(examples)):
            copies = augmenter.copies(example, found, example_id, num_aug, replace_prob, seed, pair_mode)
            out.write("\t".join([*fields, str(example_id), "0"]) + "\n")
            for index, copy in enumerate(copies, 1):
                for position, text in zip(positions, copy):
                    fields[position] = text
                out.write("\t".join([*fields, str(example_id), str(index)]) + "\n")
            totals["copies"] += len(copies)
        totals["examples"] += len(pending)
        bar.update(len(pending))
        pending.clear()

    with atomic_path(output_file) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as out, \
                tqdm(total=total, unit=" examples", desc="augment", file=sys.stderr, disable=not progress,
                     mininterval=1.0, delay=1.0) as bar:  # delay: an error in the first rows prints no bar
            rows = read_rows(input_file, (*columns, spec.label), spec.has_header,
                             fix="pass the train file of this --task (GLUE's TSV with its header)")
            for example_id, (line_no, row) in enumerate(rows):
                try:
                    if isinstance(row, BadRow):
                        raise row
                    text_a, text_b, _ = _example(row, spec)
                except BadRow as err:
                    if not skip_bad_rows:
                        raise ValueError(f"{input_file}:{line_no}: {err}: fix the row or pass --skip_bad_rows") \
                            from None
                    totals["skipped"] += 1
                    bar.update(1)
                    continue
                if header is None:
                    header = list(row) if isinstance(row, dict) else []
                    positions = [header.index(c) if header else c for c in columns]
                    if header:
                        out.write("\t".join([*header, SOURCE_COLUMN, COPY_COLUMN]) + "\n")
                fields = list(row.values()) if isinstance(row, dict) else list(row)
                pending.append((example_id, fields, (text_a,) if text_b is None else (text_a, text_b)))
                if len(pending) == EXAMPLES_PER_CHUNK:
                    flush(out)
            if pending:
                flush(out)
        if not totals["examples"]:
            raise ValueError(f"no examples in {input_file}: check the file and --task")
    return {"examples": totals["examples"], "copies": totals["copies"], "skipped": totals["skipped"],
            "seconds": time.perf_counter() - start_time}


def summary(result, augmenter, output_file):
    """The run's one-line report: rows written, copies per example, throughput, candidate sources."""
    examples, seconds = result["examples"], result["seconds"]
    return (f"wrote {examples + result['copies']} rows to {output_file}: {examples} examples and {result['copies']} "
            f"augmented copies ({result['copies'] / examples:.1f} per example; {result['skipped']} bad rows skipped) "
            f"in {seconds:.1f} s, {examples / seconds:.1f} examples/s; word candidates: {augmenter.counts['mlm']} "
            f"from the masked LM, {augmenter.counts['embeddings']} embedding neighbours "
            f"({len(augmenter.neighbour_cache)} distinct words); {len(augmenter.stop_pieces)} stop words kept; "
            f"{augmenter.tokenizer.casing}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="TinyBERT data augmentation: N copies of every training example "
                                                 "with words replaced by similar ones (GLUE TSV -> TSV).")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="GLUE task of the input file")
    parser.add_argument("--input_file", required=True, help="the task's train.tsv")
    parser.add_argument("--output_file", required=True, help="augmented .tsv to write")
    parser.add_argument("--model_dir", required=True,
                        help="model as `hf_convert import` writes it (model.ckpt, vocab.txt, tokenizer_config.json)")
    parser.add_argument("--num_aug", type=int, default=20, help="N: copies drawn per example (default 20)")
    parser.add_argument("--replace_prob", type=float, default=0.4, help="p: probability a word is replaced (0.4)")
    parser.add_argument("--num_candidates", type=int, default=15, help="K: candidates per word (default 15)")
    parser.add_argument("--candidates", choices=CANDIDATE_SOURCES, default="auto",
                        help="auto: masked LM for single-piece words when the model has the head, embedding "
                             "neighbours otherwise; mlm: require the head; embeddings: neighbours only")
    parser.add_argument("--seed", type=int, default=1, help="copies depend only on it and the example (default 1)")
    parser.add_argument("--pair_mode", choices=PAIR_MODES, default="both",
                        help="sentence pairs: each copy changes both sentences (both), or one, the first and the "
                             "second in turn (one, as TinyBERT's released augmentation script)")
    parser.add_argument("--stop_words", default=None,
                        help="file of words never replaced, one a line (default none; TinyBERT's released script "
                             "keeps NLTK's English stop words)")
    parser.add_argument("--batch_size", type=int, default=64, help="masked sentences per forward pass (default 64)")
    parser.add_argument("--seq_length", type=int, default=128,
                        help="tokens of context for the masked LM, and of --records_file rows (default 128)")
    parser.add_argument("--do_lower_case", type=str2bool, default=None,
                        help="true for uncased models (default: the model's tokenizer_config.json)")
    parser.add_argument("--skip_bad_rows", action="store_true", help="leave out and count rows that cannot convert")
    parser.add_argument("--records_file", default=None,
                        help="also convert the augmented file into these records (as src.glue_to_records does)")
    add_output_args(parser)
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"),
                        help="where the masked LM runs (default CPU)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    check_options(args.input_file, args.output_file, args.task, args.num_aug, args.replace_prob, args.pair_mode)
    stop_words = read_stop_words(args.stop_words) if args.stop_words else ()
    require_device(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device_target)
    augmenter = Augmenter(args.model_dir, args.num_candidates, args.candidates, args.seq_length, args.batch_size,
                          args.do_lower_case, stop_words)
    result = augment_file(augmenter, args.input_file, args.task, args.output_file, args.num_aug, args.replace_prob,
                          args.seed, args.skip_bad_rows, not args.no_progress, args.pair_mode)
    print(summary(result, augmenter, args.output_file))
    if args.records_file:
        print(convert(args.output_file, TASKS[args.task], augmenter.tokenizer, args.records_file, args.seq_length,
                      args.format, args.num_shards))


if __name__ == "__main__":
    run_cli(main)
