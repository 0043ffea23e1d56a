"""Evaluates the e2e flag set through the stock OpenFeature Python SDK and its OFREP provider,
unmodified: python3 ofrep_sdk.py BASE_URL. Prints one JSON object: label -> evaluation details."""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def pick(d):
    def name(v):
        return None if v is None else getattr(v, "value", v)

    return {
        "value": d.value,
        "reason": name(d.reason),
        "variant": d.variant,
        "errorCode": name(d.error_code),
    }


def main():
    api.set_provider(OFREPProvider(base_url=sys.argv[1]))
    client = api.get_client()
    staff = EvaluationContext("u-1", {"email": "a@corp.example"})
    other = EvaluationContext("u-2", {"email": "x@else.example"})
    out = {
        "boolean new-checkout": pick(client.get_boolean_details("new-checkout", True, staff)),
        "string banner staff": pick(client.get_string_details("banner", "default", staff)),
        "string banner other": pick(client.get_string_details("banner", "default", other)),
        "number page-size": pick(client.get_integer_details("page-size", 0, other)),
        "object theme": pick(client.get_object_details("theme", {}, other)),
        "missing flag": pick(client.get_boolean_details("no-such-flag", True, other)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
