"""The decoder's word shaping, without the model."""

from __future__ import annotations

from transcriber_server.batch_decode import joined_pieces
from transcriber_server.policy import Word


def test_pieces_split_at_punctuation_inside_a_word_are_joined():
    pieces = [Word(" about", 48.6, 49.0, 0.99), Word(" 14", 49.0, 49.48, 0.95), Word(".55.", 49.48, 49.96, 0.61),
              Word(" the", 50.0, 50.2, 0.9), Word(" U", 50.2, 50.3, 0.8), Word(".S.", 50.3, 50.6, 0.7)]
    assert joined_pieces(pieces) == [Word(" about", 48.6, 49.0, 0.99), Word(" 14.55.", 49.0, 49.96, 0.61),
                                     Word(" the", 50.0, 50.2, 0.9), Word(" U.S.", 50.2, 50.6, 0.7)]


def test_a_first_piece_without_a_space_stays_a_word():
    assert joined_pieces([Word("ing", 0.0, 0.2, 0.5), Word(" on", 0.2, 0.4, 0.9)]) == \
        [Word("ing", 0.0, 0.2, 0.5), Word(" on", 0.2, 0.4, 0.9)]
