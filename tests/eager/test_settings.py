"""`cl.settings`: the blog's package settings (`cl.NUM_CLASSES = 10`) live in
one place, and `cl` forwards them there. Framework free.
"""


def test_blog_settings_forward_to_cl_settings():
    import cl
    from cl import settings
    before = cl.NUM_CLASSES
    try:
        cl.NUM_CLASSES = 17
        assert settings.NUM_CLASSES == 17 and cl.NUM_CLASSES == 17
        assert settings.value_or_default(None, "NUM_CLASSES") == 17
        assert settings.value_or_default(3, "NUM_CLASSES") == 3
    finally:
        cl.NUM_CLASSES = before
    assert settings.NUM_CLASSES == before
    assert "NUM_CLASSES" not in vars(cl)  # one value, kept in cl.settings
