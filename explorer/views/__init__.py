"""Panel/HoloViews views: pure plot builders (:mod:`.plots`) and page panels (Viewers)."""
