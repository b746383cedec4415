"""transcriber_sdk.__all__ lists exactly the public names."""

import transcriber_sdk


def test_all_is_exact():
    public = {name for name in vars(transcriber_sdk) if not name.startswith("_")} - {
        "cli", "exceptions", "formats", "models", "proto", "settings"}  # submodules, importable but not re-exported names
    assert sorted(transcriber_sdk.__all__) == sorted(public)
