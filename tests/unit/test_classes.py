import pytest

from services.common.errors import InvalidArgument
from services.image_generation.classes import BUNDLED_CATALOGS, ClassCatalog


@pytest.fixture(scope="module")
def imagenet() -> ClassCatalog:
    return ClassCatalog.load(BUNDLED_CATALOGS / "imagenet.json")


def test_bundled_catalog_has_the_thousand_imagenet_classes_in_order(imagenet: ClassCatalog) -> None:
    assert len(imagenet) == 1000
    assert imagenet.by_id(0).names == ("tench", "Tinca tinca")
    assert imagenet.by_id(999).name == "toilet tissue"


@pytest.mark.parametrize(
    ("name", "expected_id"),
    [
        ("mushroom", 947),
        ("MUSHROOM", 947),
        ("Tinca tinca", 0),  # a synonym
        ("coffee_mug", 504),  # underscores like the seed's wordnet names
        ("  Coffee   Mug ", 504),
        ("coffee", 504),  # one word naming exactly one class
        ("goldfish", 1),
    ],
)
def test_names_synonyms_and_case_resolve(
    imagenet: ClassCatalog, name: str, expected_id: int
) -> None:
    assert imagenet.resolve(name).id == expected_id


def test_unknown_class_name_suggests_closest(imagenet: ClassCatalog) -> None:
    with pytest.raises(InvalidArgument) as error:
        imagenet.resolve("mushrom")
    assert "unknown class name 'mushrom'" in error.value.message
    assert "'mushroom'" in error.value.message


def test_ambiguous_full_name_lists_every_candidate_id(imagenet: ClassCatalog) -> None:
    with pytest.raises(InvalidArgument) as error:
        imagenet.resolve("crane")  # the bird (134) and the machine (517)
    assert "id 134" in error.value.message and "id 517" in error.value.message


def test_word_shared_by_several_classes_is_ambiguous(imagenet: ClassCatalog) -> None:
    with pytest.raises(InvalidArgument, match="matches several classes"):
        imagenet.resolve("terrier")


def test_empty_and_overlong_names_are_refused(imagenet: ClassCatalog) -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        imagenet.resolve("   ")
    with pytest.raises(InvalidArgument, match="longer than"):
        imagenet.resolve("x" * 201)


def test_id_out_of_range_states_valid_range(imagenet: ClassCatalog) -> None:
    with pytest.raises(InvalidArgument, match=r"0\.\.999"):
        imagenet.by_id(1000)


def test_search_is_case_insensitive_substring(imagenet: ClassCatalog) -> None:
    names = [c.name for c in imagenet.search("COFFEE")]
    assert names == ["coffee mug", "coffeepot"]
    assert len(imagenet.search("")) == 1000
