"""`python -m experiments.calibration_questions`: one question of the evaluated families per training scene."""

from experiments.calibration_questions import FamilyCalibration
from minilazy.demo.questions import FAMILIES


def test_every_scene_gives_one_question_and_the_families_rotate():
    samples = FamilyCalibration(10).calibration_samples(12)
    assert len(samples) == 12 and all(image.size[0] > 0 for image, _ in samples)
    questions = [question for _, question in samples]
    assert len(set(questions)) > len(FAMILIES) // 2  # not one prompt for every scene
    assert "Describe the image." in questions
