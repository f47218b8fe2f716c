"""FiftyOne glue: results → labels and fields, ``detect()`` over collections, an ``apply_model`` Model."""
