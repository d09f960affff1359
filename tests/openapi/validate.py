"""Validates an OpenAPI 3.1 document (tests/openapi.rs runs this with PU_TEST_PYTHON).

    python validate.py DOCUMENT.json

Checks the document against the OpenAPI 3.1 schema with openapi-spec-validator (which also
follows every $ref), and that every `pattern` is a regular expression. Prints one line per
problem. Exit codes: 0 valid, 1 invalid, 3 openapi-spec-validator is not installed.
"""

import json
import re
import sys

try:
    from openapi_spec_validator import OpenAPIV31SpecValidator
except ImportError as e:
    print(f"openapi-spec-validator is not installed: {e}")
    sys.exit(3)


def patterns(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield where, value
            else:
                yield from patterns(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from patterns(value, f"{where}/{i}")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    problems = []
    try:
        for error in OpenAPIV31SpecValidator(doc).iter_errors():
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{path}: {error.message}")
    except Exception as e:  # an unresolvable $ref ends validation with an exception
        problems.append(f"validation stopped: {type(e).__name__}: {str(e)[:300]}")
    for where, pattern in patterns(doc, "#"):
        try:
            re.compile(pattern)
        except re.error as e:
            problems.append(f"{where}: pattern {pattern!r} does not compile: {e}")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("valid")


if __name__ == "__main__":
    main()
