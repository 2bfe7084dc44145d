"""Result files: indented JSON with flat lists on one line, parsing back to the same object."""

import json

from bench.io import dumps


def test_flat_lists_on_one_line_and_the_same_object_back():
    obj = {"x": [1, 2.5e-3, -3, 1e-20], "ids": ["a,  b", 'q"z', "back\\slash", "new\nline"], "flags": [True, None],
           "nested": [[1, 2], [3]], "objects": [{"k": [4, 5]}], "empty": []}
    text = dumps(obj)
    assert json.loads(text) == obj
    assert '"x": [1, 0.0025, -3, 1e-20]' in text and '"ids": ["a,  b", "q\\"z", "back\\\\slash", "new\\nline"]' in text
    assert '"k": [4, 5]' in text and "[1, 2]" in text
