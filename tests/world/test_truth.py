from studio.world.scenes import Scene, SceneObject
from studio.world.truth import expected_answer, judge_words

SCENE = Scene([SceneObject("cross", "purple", "large", 0, 0), SceneObject("heart", "red", "small", 1, 2)], seed=0)


def words(text):
    return [" " + w for w in text.split()]


def test_caption_hallucinated_object_and_wrong_attribute_are_marked():
    caption = "a large purple cross , a small blue heart , a small orange ring ."
    verdict = judge_words(SCENE, "describe the image .", words(caption))
    marked = [w.strip() for w, v in zip(words("a large purple cross , a small blue heart , a small orange ring ."), verdict) if v]
    assert marked == ["blue", "small", "orange", "ring"]
    assert verdict[3] is False and verdict[0] is None


def test_questions_are_judged_against_ground_truth():
    assert expected_answer(SCENE, "Is there a ring?") == "no"
    assert expected_answer(SCENE, "what color is the heart ?") == "red"
    assert expected_answer(SCENE, "where is the cross ?") == "row one column one"
    assert judge_words(SCENE, "is there a ring ?", [" yes"]) == [True]
    assert judge_words(SCENE, "how many objects are there ?", [" two"]) == [False]
    assert expected_answer(SCENE, "tell me a story") is None
