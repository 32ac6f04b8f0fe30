"""CLI commands that look inside the representations: ``concepts train``, ``steer fit``,
``steer report``, and ``sav fit`` / ``sav eval`` (Sparse Attention Vectors).

``concepts train`` and ``steer fit`` are long jobs that also back the app's Concepts and Steer
tabs; they print progress and write their outputs atomically (a temporary file or folder, then
a rename). ``steer report`` measures a saved fit on the report split and writes nothing.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from studio.cli.commands import NON_NEGATIVE, POSITIVE
from studio.engine.errors import InputError

if TYPE_CHECKING:
    from studio.steering.fit import DirectionFit

DEFAULT_ALPHAS = {"mean": (-4, -2, -1, 0, 1, 2, 3, 4, 6, 8), "mc2": (-4, -2, -1, 0, 1, 2, 3, 4, 6, 8),
                  "trained": (-2, -1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 0.875, 1, 1.125, 1.25, 1.5, 2)}


def cmd_concepts_train(args, session) -> int:
    from studio.concepts.build import BuildConfig, build
    from studio.concepts.sae import DictionaryConfig
    config = BuildConfig(layer=args.layer, train_scenes=args.scenes, eval_scenes=args.eval_scenes,
                         sae=DictionaryConfig(d_sae=args.d_sae, k=args.k, steps=args.steps, seed=args.seed))
    from studio.sharding import Workers
    Workers.from_env().start()
    quality = build(session, config, args.out, args.cache)
    if quality is None:  # another process of a data-parallel launch: the main one trains and reports
        return 0
    q = quality.to_dict()
    print(f"saved to {args.out}: explained variance {q['explained_variance']:.4f} (patches "
          f"{q['explained_variance_patches']:.4f}, words {q['explained_variance_words']:.4f}), L0 {q['l0']:.1f}, "
          f"dead {q['dead_share']:.1%}, loss {q['loss_clean']:.4f} -> {q['loss_spliced']:.4f} spliced, "
          f"attribute values with a feature of AUROC >= 0.9: {q['pure_share']:.0%}")
    return 0


def cmd_concepts_word(args, session) -> int:
    from studio.concepts.activations import ActivationSet
    from studio.concepts.dictionary import learn_concepts, top_words
    token = session.tokenizer.convert_tokens_to_ids(args.word)
    if token == session.tokenizer.unk_token_id:
        raise InputError(f"{args.word!r} is not a word of this model's vocabulary")
    acts = ActivationSet(args.acts)
    concepts = learn_concepts(acts, token, args.word, args.n_concepts, args.method)
    for k, words in enumerate(top_words(session, concepts.concepts)):
        print(f"concept {k}: words {' '.join(w for w, _ in words)}; top scenes {concepts.top_scenes(k)}")
    return 0


def _numbers(text: str, kind=float) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated numbers, got {text!r}") from None


def _fit_for(args, session) -> tuple[DirectionFit, list[int]]:
    """The fit ``args.method`` asks for and its default layers; a trained fit gets its vectors later."""
    from studio.steering import fit as fitting
    from studio.steering import mc2, preference
    if args.method == "mc2":
        fit = mc2.fit_instruction_direction(session, mc2.instruction_items(args.n))
        print("held-out pairs the direction orders right, by layer: " + ", ".join(f"{a:.3f}" for a in fit.probe_accuracy))
        return fit, mc2.layer_window(session.n_layers)
    items = preference.direction_items(args.n)
    fit = fitting.fit_directions(session, items, preference.answer_items(session, items))
    print("probe accuracy by layer: " + ", ".join(f"{a:.3f}" for a in fit.probe_accuracy))
    return fit, [fitting.best_layer(fit)]


def _fit_parts(args, workers) -> Path | None:
    """Where ``steer fit`` keeps its answered batches: ``--parts``, else ``OUT.parts`` when several
    processes run; None (nothing kept) for a plain one-process run."""
    if args.parts:
        return Path(args.parts)
    return Path(f"{args.out}.parts") if workers.world > 1 else None


def _fit_header(args, session, alphas: list[float]) -> dict:
    """What every answer of a ``steer fit`` depends on (kept batches of other settings are refused)."""
    return {"model": session.source, "method": args.method, "n": args.n, "report_n": args.report_n,
            "layers": args.layers, "steps": args.steps, "seed": args.seed, "alphas": alphas}


def cmd_steer_fit(args, session) -> int:
    from studio.steering import preference, split, sweep
    from studio.steering.vectors import check_alpha
    alphas = _numbers(args.alphas) if args.alphas else list(DEFAULT_ALPHAS[args.method])
    for alpha in alphas:
        check_alpha(alpha)
    from studio.sharding import Workers, kept_batches
    workers = Workers.from_env()
    workers.start()
    validation, held = split.validation_split(args.n), split.report_split(args.report_n)
    if args.method == "trained":
        from studio.steering.train import VectorConfig, train_vector
        config = VectorConfig(steps=args.steps, seed=args.seed)
    with kept_batches(_fit_parts(args, workers), "steer-fit", _fit_header(args, session, alphas), workers):
        fit, default_layers = _fit_for(args, session)
        layers = _numbers(args.layers, int) if args.layers else default_layers
        if args.method == "trained":
            training = preference.training_items(config.items)
            fit.vectors, fit.positions = train_vector(session, training, layers, config), config.positions
            fit.extra["training"] = asdict(config)
        result = split.validate_and_report(session, fit, layers, alphas, validation, held)
    if not workers.main:  # every process answered its share; the main one reports and saves
        return 0
    fit.extra |= {"layers": layers, "sweep": result.validation.to_dict(), "items_per_style": args.n,
                  "splits": {"validation": validation.to_dict(), "report": held.to_dict()}, "chosen": result.to_dict()}
    for alpha, ratio, seen, acc in zip(result.validation.alphas, result.validation.image_ratio("neutral"),
                                       result.validation.image_ratio(sweep.TARGET_STYLE), result.validation.matched_accuracy):
        print(f"alpha {alpha:+.3f}: uninstructed conflicts follow the image {ratio:.1%} (those answerable from "
              f"the image {seen:.1%}); matched accuracy {acc:.1%} (validation split)")
    if result.report is None:
        print("no positive alpha keeps matched accuracy within the budget on the validation split: nothing to report")
    else:
        print(split.format_report(result.report))
    if result.alpha is not None and args.chair_scenes:
        fit.extra["bias_split"] = _bias_split(session, fit.steering(layers, result.alpha), args.chair_scenes)
    fit.save(args.out)
    print(f"wrote {Path(args.out) / 'preference.json'}")
    return 0


def cmd_steer_report(args, session) -> int:
    """A saved fit at the alpha its validation sweep chose, on the report split."""
    from studio.engine.assets import asset
    from studio.steering import split
    from studio.steering.fit import DirectionFit
    from studio.steering.sweep import Sweep, chosen_alpha
    fit = DirectionFit.load(args.steering or asset("steering"), session)
    if "sweep" not in fit.extra:
        raise InputError("this fit holds no validation sweep to choose alpha from: fit it with `vlm-studio steer fit`")
    alpha = chosen_alpha(Sweep(**fit.extra["sweep"]))
    if alpha is None:
        raise InputError("no positive alpha of this fit's validation sweep keeps matched accuracy within the budget")
    layers = _numbers(args.layers, int) if args.layers else list(fit.extra.get("layers", [0]))
    print(f"{fit.method} fit at layers {layers}; alpha {alpha:+g} chosen on its validation split")
    print(split.format_report(split.report(session, fit, layers, alpha, split.report_split(args.n))))
    return 0


def _bias_split(session, setting, scenes: int) -> dict:
    """Greedy against steering toward the image on the bias and neutral splits (CHAIR, POPE)."""
    from studio.steering.vectors import steered_answers
    from studio.world.compare import compare_methods, comparison_dict, format_comparison
    answerers = {"greedy": lambda i, p, m: session.answer_batch(i, p, m),
                 f"steer {setting.alpha:+g}": lambda i, p, m: steered_answers(session, i, p, m, setting)}
    scores = compare_methods(answerers, ["cooccur", "neutral"], scenes)
    print(format_comparison(scores))
    return {"alpha": setting.alpha, "comparison": comparison_dict(scores)}


def cmd_sav_fit(args, session) -> int:
    from studio.heads.sav import SAVConfig
    from studio.world.sav_eval import fit_task
    classifier = fit_task(session, args.task, SAVConfig(k=args.k))
    classifier.save(args.out)
    heads = ", ".join(f"L{layer}H{head}" for layer, head in classifier.heads)
    print(f"{args.task}: {len(classifier.heads)} head(s) chosen ({heads}) from {classifier.n_examples} few-shot "
          f"examples of {len(classifier.classes)} classes; wrote {Path(args.out) / 'sav.json'}")
    return 0


def cmd_sav_eval(args, session) -> int:
    from studio.engine.files import atomic_write_json
    from studio.world.sav_eval import evaluate, format_table
    rows = evaluate(session, args.n)
    print(format_table(rows))
    if args.json:
        atomic_write_json(args.json, [asdict(r) for r in rows])
        print(f"wrote {args.json}")
    return 0


def add_commands(sub, model_args, run) -> None:
    """Register ``concepts`` and ``steer``; ``run(fn)`` wraps a command taking (args, session)."""
    concepts = sub.add_parser("concepts", help="concept dictionaries (sparse autoencoders)").add_subparsers(
        dest="concepts_command", required=True)
    p = concepts.add_parser("train", help="collect activations, train a TopK SAE with sae-lens, score and save it")
    p.add_argument("--layer", type=NON_NEGATIVE, default=1, help="decoder layer whose output the SAE reads")
    p.add_argument("--scenes", type=POSITIVE, default=3000, help="training scenes")
    p.add_argument("--eval-scenes", type=POSITIVE, default=300, help="held-out scenes for the quality figures")
    p.add_argument("--d-sae", type=POSITIVE, default=512, help="number of features")
    p.add_argument("--k", type=POSITIVE, default=24, help="active features per position (TopK)")
    p.add_argument("--steps", type=POSITIVE, default=3000, help="training steps of 256 activations")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--out", default="runs/concepts", help="folder for the dictionary (sae-lens format)")
    p.add_argument("--cache", default="runs/activations", help="folder for the collected activations")
    model_args(p)
    p.set_defaults(func=run(cmd_concepts_train))

    p = concepts.add_parser("word", help="concepts of one word (semi-NMF or k-means over its representations)")
    p.add_argument("word", help="the target word, e.g. ring")
    p.add_argument("--acts", default="runs/activations/train-l1", help="an activation set from concepts train")
    p.add_argument("--n-concepts", type=POSITIVE, default=5)
    p.add_argument("--method", default="semi-nmf", choices=["semi-nmf", "kmeans"])
    model_args(p)
    p.set_defaults(func=run(cmd_concepts_word))

    steer = sub.add_parser("steer", help="modality preference: directions, probe curve, steering sweep").add_subparsers(
        dest="steer_command", required=True)
    p = steer.add_parser("fit", help="fit preference directions and a steering vector on conflict items, "
                                     "choose alpha on a validation split, report it on another, score the bias split")
    p.add_argument("--n", type=POSITIVE, default=200,
                   help="conflict items per instruction style (fitting, and the validation split that chooses alpha)")
    p.add_argument("--report-n", type=POSITIVE, default=200,
                   help="scenes of the report split (other scenes) where the chosen alpha is measured")
    p.add_argument("--layers", help="layers to steer, e.g. 1,2 (default: the best probe layer; "
                                    "mc2: the paper's layer window at this depth)")
    p.add_argument("--method", default="trained", choices=["trained", "mean", "mc2"],
                   help="steer with a vector trained toward the image at text positions (default), "
                        "with the mean difference at every position, or with MC²'s direction (first "
                        "principal component of image- minus text-instructed states) at every position")
    p.add_argument("--steps", type=POSITIVE, default=144, help="training steps of the trained vector")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="order of the training items")
    p.add_argument("--alphas", help="comma-separated steering strengths (default: "
                                    + "; ".join(f"{k} {','.join(map(str, v))}" for k, v in DEFAULT_ALPHAS.items()) + ")")
    p.add_argument("--chair-scenes", type=NON_NEGATIVE, default=300,
                   help="bias/neutral scenes to score steering toward the image (0 to skip)")
    p.add_argument("--out", default="runs/steering", help="folder for preference.safetensors + preference.json")
    p.add_argument("--parts", metavar="DIR",
                   help="keep every answered batch here, so a stopped run resumes (default under several "
                        "processes: OUT.parts; one process keeps nothing unless given)")
    model_args(p)
    p.set_defaults(func=run(cmd_steer_fit))

    sav = sub.add_parser("sav", help="Sparse Attention Vectors: few-shot classifiers from chosen attention heads"
                         ).add_subparsers(dest="sav_command", required=True)
    p = sav.add_parser("fit", help="fit a SAV classifier for one world task on its few-shot examples and save it")
    p.add_argument("--task", default="colour", choices=["exist", "colour", "size", "preference"],
                   help="what to classify: is there an X, an object's colour or size, or whether the answer "
                        "to a modality conflict will follow the image or the text")
    p.add_argument("--k", type=POSITIVE, default=None, help="heads that vote (default: the paper's 20 of 784)")
    p.add_argument("--out", default="runs/sav", help="folder for sav.safetensors + sav.json")
    model_args(p)
    p.set_defaults(func=run(cmd_sav_fit))
    p = sav.add_parser("eval", help="every task's SAV accuracy / AUROC on held-out scenes, with 95%% intervals")
    p.add_argument("--n", type=POSITIVE, default=200, help="held-out scenes per split and task")
    p.add_argument("--json", help="also write the rows here")
    model_args(p)
    p.set_defaults(func=run(cmd_sav_eval))

    p = steer.add_parser("report", help="measure a saved fit, at the alpha its validation sweep chose, "
                                        "on the report split (scenes apart from validation and fitting)")
    p.add_argument("--steering", metavar="DIR", help="a `steer fit` folder (default: the shipped studio/assets/steering)")
    p.add_argument("--n", type=POSITIVE, default=200, help="scenes of the report split")
    p.add_argument("--layers", help="layers to steer (default: the fit's own)")
    model_args(p)
    p.set_defaults(func=run(cmd_steer_report))

