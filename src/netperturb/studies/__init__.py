"""The studies built on the core: one subpackage per paper, each with its plan (what the
config asks for), its jobs, its figures and its own definitions. A study imports no other."""

#: Study keys, in the order the default config lists them.
STUDIES = ("cheney2017", "shen2021", "pravin2024", "faults")
