"""The built-in schemes by name, without importing them (no torch): what `mlguard key new
--help` lists. tests/schemes/test_catalog.py holds it equal to the registry."""

from __future__ import annotations

# name -> (module under mlguard.schemes, command-line aliases, one-line summary)
BUILTIN: dict[str, tuple[str, tuple[str, ...], str]] = {
    "trigger-set": ("trigger_set", ("trigger",),
                    "trigger set: secret inputs answered with secret labels (Adi et al., USENIX "
                    "Security 2018); needs the network (--arch)"),
    "weight": ("weight", (),
               "weight-space: message bits in keyed projections of chosen weights (Uchida et "
               "al., ICMR 2017); read from the state_dict alone"),
    "frontier-stitching": ("frontier_stitching", (),
                           "Frontier Stitching (Le Merrer et al., NCAA 2020): FGSM true/false "
                           "adversaries with their true labels; null bounded by reference "
                           "models"),
    "blackmarks": ("blackmarks", (),
                   "BlackMarks (Chen et al., 2019): a K-bit signature in the cluster of the "
                   "classes predicted for targeted adversarial inputs; null bounded by "
                   "reference models"),
    "ewe": ("ewe", (),
            "Entangled Watermarks (Jia et al., USENIX Security 2021): patched source-class "
            "images -> one target class, entangled by the soft nearest-neighbour loss; "
            "conservative null from reference models"),
    "dawn": ("dawn", (),
             "DAWN (Szyller et al., ACM MM 2021): the serving API answers a keyed fraction of "
             "queries with keyed wrong labels; exact null 1/(C-1)"),
    "deepsigns": ("deepsigns", (),
                  "DeepSigns (Rouhani et al., ASPLOS 2019): T secret bits in the projected mean "
                  "activation of one layer over secret key inputs of a secret class "
                  "(white-box)"),
    "deepmarks": ("deepmarks", (),
                  "DeepMarks (Chen et al., ICMR 2019): per-user AND anti-collusion codes "
                  "(BIBD) in keyed weight projections; averaged colluders are named "
                  "(white-box)"),
    "dataset-inference": ("dataset_inference", (),
                          "Dataset inference (Maini et al., ICLR 2021): the suspect's margin on "
                          "the owner's private samples against paired public ones; exact null "
                          "1/2 if the split was random"),
    "conferrable": ("conferrable", (),
                    "conferrable adversarial examples (Lukas et al., ICLR 2021): a fingerprint "
                    "whose adversarial labels transfer to models derived from yours, not to "
                    "independent ones; null bounded by held-out reference models"),
    "keyed-tails": ("keyed_tails", (),
                    "keyed tails: the serving API answers queries in keyed tails of smooth "
                    "keyed projections with keyed classes, a rule extracted copies learn "
                    "early; exact null 1/C"),
    "margin": ("margin", (),
               "margin-based watermarks (Kim et al., ICML 2023): owner images with keyed "
               "wrong labels, trained with large margins to survive extraction; exact null "
               "1/(C-1)"),
}
