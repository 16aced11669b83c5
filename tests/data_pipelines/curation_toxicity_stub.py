"""A stand-in toxicity classifier for the pipeline tests (`toxicity.classifier`).

Scores 0.9 for texts with the word 'toxicmarker'. It appends each text's first 40 characters to
$CURATION_TEST_CALLS (when set), and fails on texts containing $CURATION_TEST_FAIL_ON, so tests
can see which shards a rerun redoes.
"""

import os


def score(texts):
    fail_on = os.environ.get('CURATION_TEST_FAIL_ON')
    log = os.environ.get('CURATION_TEST_CALLS')
    for text in texts:
        if fail_on and fail_on in text:
            raise RuntimeError('injected classifier failure')
        if log:
            with open(log, 'a') as f:
                f.write(text[:40].replace('\n', ' ') + '\n')
    return [0.9 if 'toxicmarker' in t else 0.1 for t in texts]
