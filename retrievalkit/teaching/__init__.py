"""The teaching machinery around the methods: what students and instructors run, not what they learn.

- :mod:`.checks`: the exercises' check cells (``check_<task>``), and the probe / judge pair the
  grader uses with the same cases and named mistakes;
- :mod:`.exercises`: ``exercises/`` generated from ``solutions/``;
- :mod:`.grading`: grading a class, each submission in its own sandboxed kernel (:mod:`.kernels`,
  :mod:`.jail`, :mod:`.sandbox`), near-identical code flagged (:mod:`.similarity`);
  :mod:`.report`: the scores and each student's feedback; :mod:`.classreport`:
  what the class got right and wrong; :mod:`.lms`: Canvas and Moodle downloads in, gradebooks out;
- :mod:`.notebooks`: committed outputs with their widget state and settled progress bars.
"""
