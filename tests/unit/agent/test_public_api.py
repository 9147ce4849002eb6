import trickscope


def test_all_is_sorted_and_every_name_is_importable() -> None:
    assert trickscope.__all__ == sorted(trickscope.__all__)
    for name in trickscope.__all__:
        assert getattr(trickscope, name) is not None


def test_version_matches_the_distribution() -> None:
    assert trickscope.__version__ == "0.1.0"
