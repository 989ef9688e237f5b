"""How far standard features and standard classifiers get on the labeled cries.

Independent of CryLab: librosa features and scikit-learn classifiers under the protocol of the
fine-tuning issue (four classes, 5-fold cross-validation stratified and grouped by family, pooled
out-of-fold balanced accuracy and macro-F1), repeated over several fold seeds;
random-number features give the spread of chance under the same protocol. The same models
with ungrouped folds show how much family leakage inflates the figures.

    PY=$(Scripts/python-env.sh librosa scikit-learn)
    $PY Scripts/analysis/separability.py ../shared/data/donateacry/labeled [--target age]

--target age predicts the baby's age from the Donate-a-Cry file name instead of the cry class
(every labeled clip, whatever its folder; ages 04, 48, 26 and 72: the 22 group has 10 clips).
"""
import argparse
import pathlib
import warnings

import librosa
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

CLASSES = ["hungry", "belly_pain", "discomfort", "tired"]
AGES = ["04", "48", "26", "72"]  # 0-4 weeks, 4-8 weeks, 2-6 months, 7 months-2 years


def clip_features(path):
    """Per-clip statistics at the recommended front end's settings (8 kHz, n_fft 512, hop 128)."""
    audio, rate = librosa.load(path, sr=8000)
    power = librosa.feature.melspectrogram(y=audio, sr=rate, n_fft=512, hop_length=128, n_mels=64)
    log_mel = librosa.power_to_db(power, ref=np.max)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=20)
    delta = librosa.feature.delta(mfcc)
    return {
        "log-mel mean+std": np.concatenate([log_mel.mean(1), log_mel.std(1)]),
        "MFCC mean+std+delta std": np.concatenate([mfcc.mean(1), mfcc.std(1), delta.std(1)]),
    }


def models():
    balanced = "balanced"
    return {
        "logistic regression C=0.01": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.01, class_weight=balanced, max_iter=5000)),
        "logistic regression C=1": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=1, class_weight=balanced, max_iter=5000)),
        "RBF SVM": lambda: make_pipeline(StandardScaler(), SVC(C=1, class_weight=balanced)),
        "random forest": lambda: RandomForestClassifier(
            300, class_weight="balanced_subsample", min_samples_leaf=3, random_state=0, n_jobs=-1),
        "5-nearest neighbours": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(5)),
    }


def pooled_scores(features, labels, groups, make_model, seed, grouped):
    predicted = np.zeros_like(labels)
    if grouped:
        splits = StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(features, labels, groups)
    else:
        splits = StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels)
    for train, test in splits:
        model = make_model()
        model.fit(features[train], labels[train])
        predicted[test] = model.predict(features[test])
    return balanced_accuracy_score(labels, predicted), f1_score(labels, predicted, average="macro")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("labeled", help="the labeled folder: one subfolder per class")
    parser.add_argument("--seeds", type=int, default=10, help="fold seeds to average over")
    parser.add_argument("--target", choices=["reason", "age"], default="reason",
                        help="the cry class folders (reason) or the age in the file names")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    table, labels, groups = {}, [], []
    if args.target == "reason":
        names = CLASSES
        clips = [(index, path) for index, name in enumerate(CLASSES)
                 for path in sorted(pathlib.Path(args.labeled, name).glob("*.wav"))]
    else:
        names = AGES
        clips = [(AGES.index(path.stem.split("-")[-2]), path) for path in sorted(pathlib.Path(args.labeled).glob("*/*.wav"))
                 if path.stem.split("-")[-2] in AGES]
    for index, path in clips:
        for feature_name, values in clip_features(str(path)).items():
            table.setdefault(feature_name, []).append(values)
        labels.append(index)
        groups.append(path.name[:36])  # the app-instance id: one family's phone
    labels, groups = np.array(labels), np.array(groups)
    print(f"{len(labels)} clips, {len(set(groups))} families, per class "
          + ", ".join(f"{name} {count}" for name, count in zip(names, np.bincount(labels))))
    print(f"pooled out-of-fold figures, mean ± sd over {args.seeds} fold seeds; chance is 0.25 balanced accuracy\n")
    print("| features | classifier | grouped BA | grouped macro-F1 | ungrouped BA |")
    print("|---|---|---|---|---|")
    # Chance under this protocol: random numbers per clip, and the same random numbers for every
    # clip of a family (features that only say which family a clip comes from).
    noise = np.random.default_rng(0)
    family_index = np.unique(groups, return_inverse=True)[1]
    table["random numbers per clip (chance)"] = noise.normal(size=(len(labels), 40))
    table["random numbers per family (chance)"] = noise.normal(size=(family_index.max() + 1, 40))[family_index]
    for feature_name, rows in table.items():
        features = np.array(rows)
        chance_row = "chance" in feature_name
        for model_name, make_model in models().items():
            if chance_row and model_name != "logistic regression C=1":
                continue
            grouped = [pooled_scores(features, labels, groups, make_model, s, True) for s in range(args.seeds)]
            ungrouped = [pooled_scores(features, labels, groups, make_model, s, False) for s in range(args.seeds)]
            ba, f1 = np.array(grouped).T
            print(f"| {feature_name} | {model_name} | {ba.mean():.3f} ± {ba.std():.3f} | {f1.mean():.3f} ± {f1.std():.3f} "
                  f"| {np.mean([b for b, _ in ungrouped]):.3f} |")


if __name__ == "__main__":
    main()
