"""SED metrics that give the reference tools' numbers: segment-based, event-based and PSDS.

Every comparison this project reports rests on these functions, and the SED community trusts
only numbers that match its reference tools, so each function reproduces one reference exactly
(the tests check it on hundreds of random sets, tricky cases included) while being vectorised
numpy instead of per-segment / per-event Python loops:

One module per family (`segment`, `event`, `psd`), what they share in `common`; import them
from here.

- `segment_based`: sed_eval 0.2.1 `SegmentBasedMetrics` (Mesaros et al., "Metrics for polyphonic
  sound event detection", 2016), to 1e-6;
- `event_based`: sed_eval 0.2.1 `EventBasedMetrics` with its default optimal matching, to 1e-6;
- `psds` / `psds1` / `psds2`: sed_scores_eval 0.0.4 `intersection_based.psds`, computed from
  frame scores without choosing thresholds, to 1e-3 (in practice ~1e-12); `psds1_and_psds2`
  (and `psd_rocs` for any settings) gives several scenarios for little more than one, as most
  of the work is shared.

Inputs. Events are `annotations.Event` (onset, offset, label; seconds) in
`{filename: [Event, ...]}` maps, as `annotations.read_strong_tsv` returns. The reference defines
the evaluated files: a file without events must be present with `[]` (a DCASE TSV says so with an
empty row). An estimated file missing from the reference is an error (a misspelt or prefixed name
would otherwise silently vanish from the scores); a reference file missing from the estimates
has no detections. Events of a file are used in their list order, which matters only for
sed_eval's greedy substitution count (see `event_based`); `read_strong_tsv` sorts them.

Undefined values and the averaging rule. sed_eval returns NaN for a precision with no estimate,
a recall with no reference and the F1 built from them, and its class-wise averages are
`nanmean`s, so absent classes silently change which classes a mean is over. Here:
  - recall, F1 and error rates of a class with no reference event are undefined: `None`
    (null in JSON), never NaN; its precision is 0.0 when it has estimates (all false) and
    `None` when it has none either. Each class says which case it is in `status`:
    "ok" (has reference events), "no_reference" (only estimates: false positives) or
    "absent" (neither);
  - a class with reference events but no estimate has precision 0, recall 0, F1 0 (as sed_eval
    with `empty_system_output_handling='zero_score'`, the setting DESED_task uses);
  - macro (class-wise) averages are plain means over the classes with status "ok", the classes
    with reference events; the others are reported in `class_wise` but left out of the means.
    `n_macro_classes` says how many classes a mean is over. When every class has reference
    events (any DCASE evaluation set), every macro value equals sed_eval's `class_wise_average`
    with `empty_system_output_handling='zero_score'`; with absent classes sed_eval's own
    averages differ (its precision mean counts them as 0, its ER mean as 0, or ~1e15 when they
    have insertions, because it divides by Nref + eps).
  - micro (overall) values follow the same rules on the totals.
Rates divide by Nref exactly; sed_eval divides by Nref + 2.2e-16, a difference below 1e-15.
"""

from sed_jax.evaluation.metrics.common import EventsByFile
from sed_jax.evaluation.metrics.common import ScoresByFile
from sed_jax.evaluation.metrics.event import event_based
from sed_jax.evaluation.metrics.psd import PSDS1
from sed_jax.evaluation.metrics.psd import PSDS2
from sed_jax.evaluation.metrics.psd import PsdsResult
from sed_jax.evaluation.metrics.psd import psd_roc
from sed_jax.evaluation.metrics.psd import psd_rocs
from sed_jax.evaluation.metrics.psd import psds
from sed_jax.evaluation.metrics.psd import psds1
from sed_jax.evaluation.metrics.psd import psds1_and_psds2
from sed_jax.evaluation.metrics.psd import psds2
from sed_jax.evaluation.metrics.segment import segment_based

__all__ = ["EventsByFile", "ScoresByFile", "PSDS1", "PSDS2", "PsdsResult", "event_based",
           "psd_roc", "psd_rocs", "psds", "psds1", "psds1_and_psds2", "psds2", "segment_based"]
