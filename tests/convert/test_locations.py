"""Detection text: boxes -> loc tokens -> boxes within one bin, class-name rules, prompts."""
import numpy as np
import pytest

from components.convert import boxes_to_loc_text, check_class_name, detect_prefix, loc_text_to_boxes


def test_round_trip_within_one_bin_over_random_boxes_and_sizes():
  rng = np.random.default_rng(1234)
  for _ in range(500):
    width, height = rng.integers(1, 5000, size=2)
    n = int(rng.integers(1, 6))
    corners = rng.uniform(0, 1, size=(n, 2, 2)) * [width, height]  # [N, corner, xy]
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)  # [N, 4] x1, y1, x2, y2
    labels = [f"class {i}" for i in range(n)]
    text = boxes_to_loc_text(boxes, labels, width, height)
    decoded, decoded_labels = loc_text_to_boxes(text, width, height)
    assert decoded_labels == labels
    bin_size = np.array([width, height, width, height]) / 1023
    # big_vision rounds to the nearest bin, so the error is at most half a bin.
    assert np.all(np.abs(decoded - boxes) <= bin_size / 2 + 1e-9), text


def test_token_order_is_y_then_x_and_uses_round_of_v_times_1023():
  text = boxes_to_loc_text([[10, 20, 30, 40]], ["cat"], width=100, height=200)
  # y1 = 20/200 -> round(102.3) = 102, x1 = 0.1 -> 102, y2 = 0.2 -> round(204.6) = 205, x2 = 0.3 -> round(306.9) = 307
  assert text == "<loc0102><loc0102><loc0205><loc0307> cat"


def test_coordinates_outside_the_image_are_clipped_to_the_bin_range():
  text = boxes_to_loc_text([[-5, -5, 150, 300]], ["x"], width=100, height=200)
  assert text == "<loc0000><loc0000><loc1023><loc1023> x"


def test_several_objects_are_joined_with_semicolons_and_parse_back():
  text = boxes_to_loc_text([[0, 0, 50, 50], [50, 50, 100, 100]], ["a", "traffic light"], 100, 100)
  assert text == "<loc0000><loc0000><loc0512><loc0512> a ; <loc0512><loc0512><loc1023><loc1023> traffic light"
  boxes, labels = loc_text_to_boxes(text)
  assert labels == ["a", "traffic light"]
  np.testing.assert_allclose(boxes[1], [512 / 1023, 512 / 1023, 1, 1])


def test_malformed_model_output_keeps_what_parses():
  boxes, labels = loc_text_to_boxes("<loc0001><loc0002> half ; <loc0100><loc0200><loc0300><loc0400> dog ; junk")
  assert labels == ["dog"]
  np.testing.assert_allclose(boxes, [[200 / 1023, 100 / 1023, 400 / 1023, 300 / 1023]])


def test_empty_text_gives_no_boxes():
  boxes, labels = loc_text_to_boxes("")
  assert boxes.shape == (0, 4) and labels == []


@pytest.mark.parametrize("name", ["a ; b", "a;b", "<loc0001>", "x<y", "", "  "])
def test_class_names_that_break_the_text_are_refused(name):
  with pytest.raises(ValueError, match="class name"):
    check_class_name(name)


def test_detect_prefix_lists_every_class():
  assert detect_prefix(["cat", "traffic light"]) == "detect cat ; traffic light"
