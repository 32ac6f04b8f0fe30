"""CLI commands that look inside the representations: ``concepts train`` and ``steer fit``.

Both are long jobs that also back the app's Concepts and Steer tabs; they print progress and
write their outputs atomically (a temporary file or folder, then a rename).
"""
from __future__ import annotations

from pathlib import Path

from studio.errors import InputError


def cmd_concepts_train(args, session) -> int:
    from studio.concepts.build import BuildConfig, build
    from studio.concepts.sae import DictionaryConfig
    config = BuildConfig(layer=args.layer, train_scenes=args.scenes, eval_scenes=args.eval_scenes,
                         sae=DictionaryConfig(d_sae=args.d_sae, k=args.k, steps=args.steps, seed=args.seed))
    quality = build(session, config, args.out, args.cache)
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


def cmd_steer_fit(args, session) -> int:
    from studio import steering
    from studio.world.compare import compare_methods, comparison_dict, format_comparison
    alphas = _numbers(args.alphas)
    for alpha in alphas:
        steering.check_alpha(alpha)
    items = steering.direction_items(args.n)
    fit = steering.fit_directions(session, items, steering.answer_items(session, items))
    layers = _numbers(args.layers, int) if args.layers else [steering.best_layer(fit)]
    conflict, matched = steering.held_out_items(args.n)
    result = steering.sweep(session, fit, layers, alphas, conflict, matched)
    fit.extra = {"layers": layers, "sweep": result.to_dict(), "items_per_style": args.n}
    print("probe accuracy by layer: " + ", ".join(f"{a:.3f}" for a in fit.probe_accuracy))
    for alpha, ratio, acc in zip(result.alphas, result.image_ratio(), result.matched_accuracy):
        print(f"alpha {alpha:+.2f}: neutral conflicts follow the image {ratio:.1%}; matched accuracy {acc:.1%}")
    alpha = steering.chosen_alpha(result)
    if alpha is not None and args.chair_scenes:
        edits = steering.steering_edits(fit.directions, layers, alpha)
        answerers = {"greedy": lambda i, p, m: session.answer_batch(i, p, m),
                     f"steer {alpha:+g}": lambda i, p, m: steering.answer_with_edits(session, i, p, m, edits)}
        scores = compare_methods(answerers, ["cooccur", "neutral"], args.chair_scenes)
        print(format_comparison(scores))
        fit.extra["bias_split"] = {"alpha": alpha, "comparison": comparison_dict(scores)}
    fit.save(args.out)
    print(f"wrote {Path(args.out) / 'preference.json'}")
    return 0


def add_commands(sub, model_args, run) -> None:
    """Register ``concepts`` and ``steer``; ``run(fn)`` wraps a command taking (args, session)."""
    concepts = sub.add_parser("concepts", help="concept dictionaries (sparse autoencoders)").add_subparsers(
        dest="concepts_command", required=True)
    p = concepts.add_parser("train", help="collect activations, train a TopK SAE with sae-lens, score and save it")
    p.add_argument("--layer", type=int, default=1, help="decoder layer whose output the SAE reads")
    p.add_argument("--scenes", type=int, default=3000, help="training scenes")
    p.add_argument("--eval-scenes", type=int, default=300, help="held-out scenes for the quality figures")
    p.add_argument("--d-sae", type=int, default=512, help="number of features")
    p.add_argument("--k", type=int, default=24, help="active features per position (TopK)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of 256 activations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/concepts", help="folder for the dictionary (sae-lens format)")
    p.add_argument("--cache", default="runs/activations", help="folder for the collected activations")
    model_args(p)
    p.set_defaults(func=run(cmd_concepts_train))

    p = concepts.add_parser("word", help="concepts of one word (semi-NMF or k-means over its representations)")
    p.add_argument("word", help="the target word, e.g. ring")
    p.add_argument("--acts", default="runs/activations/train-l1", help="an activation set from concepts train")
    p.add_argument("--n-concepts", type=int, default=5)
    p.add_argument("--method", default="semi-nmf", choices=["semi-nmf", "kmeans"])
    model_args(p)
    p.set_defaults(func=run(cmd_concepts_word))

    steer = sub.add_parser("steer", help="modality preference: directions, probe curve, steering sweep").add_subparsers(
        dest="steer_command", required=True)
    p = steer.add_parser("fit", help="fit preference directions on conflict items, sweep alpha, score the bias split")
    p.add_argument("--n", type=int, default=200, help="conflict items per instruction style")
    p.add_argument("--layers", help="layers to steer, e.g. 1,2 (default: the best probe layer)")
    p.add_argument("--alphas", default="-4,-2,-1,0,1,2,3,4,6,8", help="comma-separated steering strengths")
    p.add_argument("--chair-scenes", type=int, default=300,
                   help="bias/neutral scenes to score steering toward the image (0 to skip)")
    p.add_argument("--out", default="runs/steering", help="folder for preference.safetensors + preference.json")
    model_args(p)
    p.set_defaults(func=run(cmd_steer_fit))

